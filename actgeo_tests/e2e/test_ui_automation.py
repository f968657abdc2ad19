"""Automation is on out of the box under `make ui`: `dagster dev` (webserver + daemon) with a fresh instance,
both sensors RUNNING by default. A file dropped into a file-sharded corpus folder becomes a new shard
partition, its capture, normalization and tiles (shard_sensor), then new `components` and `component_cards`
(declarative automation), without a click. The file-to-cards latency is measured (printed and written to
test-output/automation-latency.txt); the asset pages are screenshotted in test-output/."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.dagster_ui import (
    dagster_ui,
    environ,
    free_port,
    instance_home,
    skip_community_dialog,
)
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import split_corpus, tiny_values

pytestmark = pytest.mark.browser


def _since(ui, asset: str, t0: float) -> list[dict]:
    return [m for m in ui.materializations(asset, limit=50) if int(m["timestamp"]) / 1000 > t0]


def test_a_dropped_file_becomes_shards_tiles_components_and_cards(tmp_path: Path) -> None:
    require_chromium()
    files = split_corpus(tmp_path / "all")
    corpus, data = tmp_path / "corpus", tmp_path / "data"
    corpus.mkdir()
    for f in files[:2]:
        shutil.copy(f, corpus / f.name)
    # the tiny run on a corpus folder, one shard per file; l2 (no mean over all shards), so a new file's
    # shard leaves the others' unit rows current
    config = {"data_dir": str(data), **tiny_values(model=tiny_gemma2(tmp_path / "model"), corpus=str(corpus),
                                                   shard_by="file", budget_per_shard=250, normalization="l2")}
    cfg = tmp_path / "actgeo.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {"DAGSTER_HOME": str(instance_home(tmp_path / "home")), "ACTGEO_CONFIG": str(cfg),
           "ACTGEO_REPORT_URL": f"http://127.0.0.1:{free_port()}"}
    with environ(**env), dg.DagsterInstance.get() as instance:  # what `make demo` did before `make ui`
        materialize_run(ActgeoResource(), instance, echo=lambda s: None)

    with dagster_ui(tmp_path, {**os.environ, **env, "PYTHONUNBUFFERED": "1"}, data) as ui:
        repo = ui.graphql("""query { repositoriesOrError { ... on RepositoryConnection { nodes {
            sensors { name sensorState { status } } } } } }""")["repositoriesOrError"]["nodes"][0]
        assert {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]} == {
            "shard_sensor": "RUNNING", "default_automation_condition_sensor": "RUNNING"}
        time.sleep(20)  # one tick of each sensor with nothing new: the automation sensor sets its cursor
        assert _since(ui, "raw_activations", time.time() - 20) == []

        t0 = time.time()
        shutil.copy(files[2], corpus / files[2].name)  # a new file arrives
        deadline, cards = t0 + 900, []
        while time.time() < deadline and not cards:
            time.sleep(3)
            cards = _since(ui, "component_cards", t0)
        latency = time.time() - t0
        runs = ui.graphql("""query { runsOrError(limit: 50) { ... on Runs { results {
            runId jobName status startTime tags { key value } } } } }""")["runsOrError"]["results"]
        assert cards, f"no new cards {latency:.0f} s after the file arrived:\n{ui.log.read_text()[-3000:]}"
        TEST_OUTPUT.mkdir(exist_ok=True)
        (TEST_OUTPUT / "automation-latency.txt").write_text(
            f"file dropped -> component_cards materialized: {latency:.1f} s (tiny model, 3 files)\n")
        print(f"\nautomation: file -> cards in {latency:.1f} s")

        # only the new shard was captured and normalized, only its tiles joined, then one merge
        assert [m["partition"] for m in _since(ui, "raw_activations", t0)] == ["shard-c"]
        assert [m["partition"] for m in _since(ui, "normalized", t0)] == ["shard-c"]
        assert sorted(m["partition"] for m in _since(ui, "edge_tiles", t0)) == [
            "shard-a__shard-c", "shard-b__shard-c", "shard-c__shard-c"]
        assert len(_since(ui, "components", t0)) >= 1
        launched_by = {(r["jobName"], {t["key"]: t["value"] for t in r["tags"]}.get("dagster/sensor_name"))
                       for r in runs if r["startTime"] and r["startTime"] > t0}
        assert ("capture_job", "shard_sensor") in launched_by
        assert any(sensor == "default_automation_condition_sensor" for _, sensor in launched_by), launched_by

        with chromium_context(viewport=(1400, 1000), timeout_ms=60_000) as ctx:
            page = ctx.new_page()
            page.goto(ui.url("/assets/raw_activations?view=partitions"))
            skip_community_dialog(page)
            page.get_by_text("shard-c").first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(TEST_OUTPUT / "ui-automation-new-partition.png"), full_page=True)
            page.goto(ui.url("/runs"))
            page.get_by_text("default_automation_condition_sensor").first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(TEST_OUTPUT / "ui-automation-runs.png"), full_page=True)
