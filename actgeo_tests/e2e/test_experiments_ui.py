"""Experiments in the UI, as a user works with them under `make ui` (`dagster dev`: webserver + daemon): an
experiment file dropped into the data directory is materialized by its own shard sensor and the automation
sensor without a click (the time it takes is printed and written to test-output/), its runs re-execute, and
the launchpad's ``add_experiment_job`` adds another, which "Reload definitions" turns into assets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from actgeo_assets.lib.config.experiments import EXPERIMENTS_DATA_DIR_ENV, experiment_file, write_experiment
from actgeo_assets.lib.config.sources import resolve_settings
from actgeo_tests.support.browser import TEST_OUTPUT
from actgeo_tests.support.dagster_ui import dagster_ui, free_port, instance_home
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values

pytestmark = pytest.mark.browser

MATERIALIZED = """query($k: [String!]!) { assetOrError(assetKey: {path: $k}) {
    ... on Asset { assetMaterializations(limit: 1) { runId timestamp } } } }"""
RUNS_OF_JOB = """query($job: String!) { runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status } } } }"""
ASSET_KEYS = """query { assetNodes { assetKey { path } groupName } }"""


def _materialized(ui, path: list[str]) -> bool:
    data = ui.graphql(MATERIALIZED, {"k": path})["assetOrError"]
    return bool(data.get("assetMaterializations"))


def test_an_experiment_file_is_materialized_by_automation_and_reexecutes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model = tiny_gemma2(tmp_path / "model")
    values = tiny_values(model=model, budget=400)
    config = tmp_path / "actgeo.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data), **values}))
    # the experiment: the profile's settings with another layer, dropped in as a file
    write_experiment(data, "tiny_layer_1", resolve_settings([("test", {**values, "layer": 1})]))
    env = {**os.environ, "DAGSTER_HOME": str(instance_home(tmp_path / "home")), "ACTGEO_CONFIG": str(config),
           "ACTGEO_REPORT_URL": f"http://127.0.0.1:{free_port()}", EXPERIMENTS_DATA_DIR_ENV: str(data),
           "PYTHONUNBUFFERED": "1"}
    with dagster_ui(tmp_path, env, data) as ui:
        t0 = time.time()
        nodes = ui.graphql(ASSET_KEYS)["assetNodes"]
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert groups["tiny_layer_1/components"] == "tiny_layer_1" and groups["components"] == "actgeo"
        # no click: the experiment's shard sensor captures, normalizes and joins; automation merges and cards
        deadline = time.time() + 900
        while time.time() < deadline and not _materialized(ui, ["tiny_layer_1", "component_cards"]):
            time.sleep(5)
        assert _materialized(ui, ["tiny_layer_1", "component_cards"]), ui.log.read_text()[-3000:]
        seconds = time.time() - t0
        TEST_OUTPUT.mkdir(exist_ok=True)
        (TEST_OUTPUT / "experiment-ui-automation.txt").write_text(
            f"experiment file to materialized cards, by the sensors alone: {seconds:.0f} s\n")
        print(f"experiment materialized by automation in {seconds:.0f} s")
        assert (data / "tiny_layer_1" / "cards" / "report.html").is_file()
        # a run of the experiment's own job re-executes with its settings
        runs = ui.graphql(RUNS_OF_JOB, {"job": "tiny_layer_1__capture_job"})["runsOrError"]["results"]
        assert runs and {r["status"] for r in runs} == {"SUCCESS"}
        launched = ui.graphql("""mutation($id: String!) { launchPipelineReexecution(
            reexecutionParams: {parentRunId: $id, strategy: ALL_STEPS}) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                              {"id": runs[0]["runId"]})["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        assert ui.wait_run(launched["run"]["runId"]) == "SUCCESS"
        # the launchpad adds another experiment: its settings in the resource config, its name in the op config
        resource = {k: list(v) if isinstance(v, tuple) else v for k, v in {**values, "layer": 0}.items()}
        launched = ui.graphql("""mutation($config: RunConfigData!) { launchRun(executionParams: {
            selector: {repositoryLocationName: "actgeo_assets.definitions", repositoryName: "__repository__",
                       pipelineName: "add_experiment_job"}, runConfigData: $config}) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
            ... on RunConfigValidationInvalid { errors { message } } } }""",
                              {"config": {"ops": {"add_experiment": {"config": {"name": "tiny_layer_0"}}},
                                          "resources": {"actgeo": {"config": resource}}}})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        assert ui.wait_run(launched["run"]["runId"]) == "SUCCESS"
        assert yaml.safe_load(experiment_file(data, "tiny_layer_0").read_text())["layer"] == 0
        reloaded = ui.graphql("""mutation { reloadRepositoryLocation(repositoryLocationName:
            "actgeo_assets.definitions") { __typename } }""")["reloadRepositoryLocation"]
        assert reloaded["__typename"] == "WorkspaceLocationEntry", reloaded
        keys = {"/".join(n["assetKey"]["path"]) for n in ui.graphql(ASSET_KEYS)["assetNodes"]}
        assert {"tiny_layer_0/raw_activations", "tiny_layer_0/component_cards"} <= keys
