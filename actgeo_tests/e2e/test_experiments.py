"""Experiments side by side in one data directory and one Dagster instance, on the tiny model: `actgeo run --set`
creates the experiment named by its settings and leaves the profile's run as it was (same sha256 of every
file); its runs are its own jobs on its own partitions, under its asset-key prefix; a second call resumes it;
the Definitions hold its assets, jobs and shard sensor (the sensor, evaluated, finds nothing stale); the
comparison asset reads both; `actgeo remove --experiment` takes its files, SQL rows and partitions and
nothing else."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from actgeo_assets.cli import main
from actgeo_assets.lib.config.experiments import EXPERIMENTS_DATA_DIR_ENV, read_experiment
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_set_args


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(db: Path, run_id: str) -> int:
    with sa.create_engine(f"sqlite:///{db}").connect() as c:
        return int(c.execute(sa.text("select count(*) from actgeo_components where run_id = :r"),
                             {"r": run_id}).scalar())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory):
    """The tiny run as the profile's own run, then `actgeo run` of the same settings with ``layer=1``."""
    tmp = tmp_path_factory.mktemp("experiments")
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(tmp / "home"))
    mp.setenv(EXPERIMENTS_DATA_DIR_ENV, str(tmp / "data"))  # restored after the module
    mp.delenv("ACTGEO_DATABASE_URL", raising=False)
    model = tiny_gemma2(tmp / "model")
    base = ["run", "--data-dir", str(tmp / "data"), *tiny_set_args(model=model)]
    assert main(base) == 0
    before = _hashes(tmp / "data" / "demo")
    # the same settings with another layer, as a user types it: no --experiment
    argv = [a for a in base if a not in ("--experiment", "demo")] + ["--set", "layer=1"]
    assert main(argv) == 0
    yield tmp, model, before, argv
    mp.undo()


def test_set_creates_an_experiment_and_leaves_the_profile_run_as_it_was(two_runs, capsys) -> None:
    tmp, _, before, argv = two_runs
    data = tmp / "data"
    assert _hashes(data / "demo") == before  # every file of the profile's run, byte for byte
    files = sorted((data / "experiments").glob("*.yaml"))
    assert len(files) == 1
    exp = read_experiment(data, files[0].stem)
    assert exp.values["layer"] == 1 and exp.values["profile"] == "demo"
    summary = json.loads((data / exp.name / "components" / "summary.json").read_text())
    assert summary["run_key"]["layer"] == 1
    # each step's peak memory, recorded with the experiment
    memory = json.loads((data / exp.name / "memory.json").read_text())
    assert {"raw_activations[shard-000]", "edge_tiles[shard-000__shard-001]", "components + component_cards"} <= set(memory)
    assert all(0 < m["bytes"] < 64 * 2**30 and m["method"] in ("vmhwm", "ru_maxrss") for m in memory.values())
    demo = json.loads((data / "demo" / "components" / "summary.json").read_text())
    assert demo["run_key"]["layer"] == 2
    # its SQL rows are its own run id's; the profile's run keeps its own
    db = data / "actgeo.sqlite"
    assert _rows(db, summary["run_id"]) > 0 and _rows(db, demo["run_id"]) > 0
    # the same command again resumes it: nothing is stale
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "every stage is current" in out and f"experiment {exp.name}" in out


def test_experiment_runs_are_its_own_jobs_partitions_and_assets(two_runs) -> None:
    tmp, *_ = two_runs
    name = next((tmp / "data" / "experiments").glob("*.yaml")).stem
    with dg.DagsterInstance.from_config(str(tmp / "home")) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"actgeo/experiment": name}))
        jobs = sorted({r.job_name for r in runs})
        assert jobs == sorted(f"{name}__{j}" for j in ("capture_job", "mean_job", "normalize_job", "tiles_job",
                                                       "merge_job"))
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert sorted(instance.get_dynamic_partitions(f"{name}__actgeo_shards")) == ["shard-000", "shard-001"]
        assert len(instance.get_dynamic_partitions(f"{name}__actgeo_shard_pairs")) == 3
        for stage in ("raw_activations", "normalized", "edge_tiles", "components", "component_cards"):
            key = dg.AssetKey([name, stage])
            assert instance.get_latest_materialization_event(key) is not None, stage
        # the profile's runs are the unprefixed assets' and carry no experiment tag
        plain = instance.get_runs(filters=dg.RunsFilter(job_name="merge_job"))
        assert plain and all("actgeo/experiment" not in r.tags for r in plain)


def test_definitions_hold_the_experiment_and_its_sensor_finds_it_current(two_runs) -> None:
    from actgeo_assets.definitions import build_defs
    from actgeo_assets.defs.resources import ActgeoResource

    tmp, model, *_ = two_runs
    name = next((tmp / "data" / "experiments").glob("*.yaml")).stem
    defs = build_defs("local")  # the experiments of $ACTGEO_EXPERIMENTS_DATA_DIR
    graph = defs.resolve_asset_graph()
    comps = graph.get(dg.AssetKey([name, "components"]))
    assert {k.to_user_string() for k in comps.parent_keys} == {f"{name}/edge_tiles", f"{name}/normalized"}
    assert comps.group_name == name
    assert graph.get(dg.AssetKey([name, "raw_activations"])).partitions_def.name == f"{name}__actgeo_shards"
    cmp_parents = {k.to_user_string() for k in graph.get(dg.AssetKey("experiment_comparison")).parent_keys}
    assert cmp_parents == {"components", "component_cards", f"{name}/components", f"{name}/component_cards"}
    sensor = defs.resolve_sensor_def(f"{name}__shard_sensor")
    with dg.DagsterInstance.from_config(str(tmp / "home")) as instance:
        context = dg.build_sensor_context(instance=instance, resources={"actgeo": ActgeoResource(
            data_dir=str(tmp / "data"))}, sensor_name=sensor.name)
        result = sensor(context)
    assert not result.run_requests and "is current" in result.skip_reason.skip_message


def test_comparison_reads_both(two_runs) -> None:
    from actgeo_assets.defs.experiments import comparison_asset
    from actgeo_assets.defs.resources import ActgeoResource

    tmp, *_ = two_runs
    name = next((tmp / "data" / "experiments").glob("*.yaml")).stem
    # the profile's run is the tiny run's settings (its values as resource config), the experiment its file's
    exp = read_experiment(tmp / "data", name)
    values = {k: v for k, v in exp.values.items() if k != "layer"}
    resource = ActgeoResource(data_dir=str(tmp / "data"), **values)
    with dg.DagsterInstance.from_config(str(tmp / "home")) as instance:
        result = dg.materialize([comparison_asset([name])], instance=instance,
                                resources={"actgeo": resource},
                                run_config={"ops": {"experiment_comparison": {"config": {"common_n": 200}}}})
    assert result.success
    meta = result.asset_materializations_for_node("experiment_comparison")[0].metadata
    assert meta["experiments"].value == ["demo", name]
    page = (tmp / "data" / "comparison" / "report.html").read_text()
    assert "demo" in page and name in page


def test_cli_lists_and_compares(two_runs, capsys) -> None:
    tmp, *_ = two_runs
    data = tmp / "data"
    name = next((data / "experiments").glob("*.yaml")).stem
    assert main(["experiments", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert name in out and "materialized" in out and "layer=1" in out
    assert main(["compare", "--data-dir", str(data), name, "demo", "--common-n", "200"]) == 0
    out = capsys.readouterr().out
    assert f"compared {name}, demo" in out and str(data / "comparison" / "report.html") in out
    assert main(["compare", "--data-dir", str(data), "nosuch"]) == 2
    assert "no experiment ['nosuch']" in capsys.readouterr().err


def test_remove_takes_the_experiment_and_nothing_else(two_runs, capsys) -> None:
    tmp, _, before, argv = two_runs
    data = tmp / "data"
    name = next((data / "experiments").glob("*.yaml")).stem
    run_id = json.loads((data / name / "components" / "summary.json").read_text())["run_id"]
    demo_id = json.loads((data / "demo" / "components" / "summary.json").read_text())["run_id"]
    demo_rows = _rows(data / "actgeo.sqlite", demo_id)
    assert main(["remove", "--data-dir", str(data), "--experiment", name, "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"removed experiment {name}" in out and "Dagster partitions" in out
    assert not (data / name).exists() and not (data / "experiments" / f"{name}.yaml").exists()
    assert _rows(data / "actgeo.sqlite", run_id) == 0
    assert _rows(data / "actgeo.sqlite", demo_id) == demo_rows
    assert _hashes(data / "demo") == before
    with dg.DagsterInstance.from_config(str(tmp / "home")) as instance:
        assert instance.get_dynamic_partitions(f"{name}__actgeo_shards") == []
        assert instance.get_latest_materialization_event(dg.AssetKey([name, "components"])) is None
