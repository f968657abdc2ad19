"""The pipeline is declared once (defs/pipeline.py): a stage added to a copy of the declaration gets its job,
its asset's arguments and step pod, the shard sensor's coverage and the planner's entry, with no other edit."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

from actgeo_assets.defs.automation import build_shard_sensor
from actgeo_assets.defs.pipeline import (
    GPU,
    STAGES,
    Stage,
    asset_args,
    build_jobs,
    run_stages,
    sensor_stages,
    specs_for,
)
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.config.constants import GPU_POOL
from actgeo_assets.lib.stages.plan import plan
from actgeo_assets.lib.stages.record import SHARDS, StageSpec, input_field


@dataclass(frozen=True)
class ShardStatsRecord:
    """A new stage's sidecar: the normalized shard it summarised."""

    normalized_sha256: str | None = input_field(lambda i: i.upstream["normalized"].get(i.key))
    sha256: str = ""


SHARD_STATS = StageSpec(
    name="shard_stats", partitions=SHARDS, upstream=("normalized",), record=ShardStatsRecord, version="stats-1",
    sidecar=lambda layout, shard: layout.root / "shard_stats" / f"{shard}.json",
    files=lambda layout, shard, meta: [(layout.root / "shard_stats" / f"{shard}.npy", meta.get("sha256"))],
)


def _with_new_stage() -> tuple[Stage, ...]:
    """The declaration with one more stage after `normalized`: a GPU step per shard, requested by the sensor."""
    at = [s.name for s in STAGES].index("normalized") + 1
    new = Stage(SHARD_STATS, job="stats_job", runs_on=GPU, sensor=True, description="Statistics of one shard.")
    return (*STAGES[:at], new, *STAGES[at:])


def test_a_new_stage_gets_its_job_asset_and_step_pod() -> None:
    stages = _with_new_stage()
    jobs = build_jobs(stages)
    assert set(jobs) == {s.job for s in STAGES} | {"stats_job"}
    args = asset_args("shard_stats", stages)
    assert args["partitions_def"].name == "actgeo_shards" and args["pool"] == GPU_POOL
    assert args["code_version"] == "stats-1"
    assert [(d.asset_key.to_user_string(), d.partition_mapping) for d in args["deps"]] == [("normalized", None)]

    @dg.asset(**args)
    def shard_stats() -> None: ...

    defs = dg.Definitions(assets=[shard_stats], jobs=[jobs["stats_job"]])
    job = defs.resolve_job_def("stats_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"shard_stats"}
    # the step's pod, as dagster-k8s builds it from the step's op tags: one GPU on a GPU node
    step_tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in shard_stats.op.tags.items()}
    context = K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags))
    pod = construct_dagster_k8s_job(DagsterK8sJobConfig(job_image="actgeo:test", dagster_home="/opt/dagster"),
                                    ["dagster"], "dagster-step-x",
                                    user_defined_k8s_config=context.run_k8s_config).spec.template.spec
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}


def test_a_new_stage_is_covered_by_the_sensor_and_the_planner(tiny_runs, tmp_path: Path) -> None:
    """On a finished run every declared stage is current; the new stage's shards are what the sensor asks for."""
    stages = _with_new_stage()
    assert "shard_stats" in [s.name for s in sensor_stages(stages)]
    assert "shard_stats" in [s.name for s in run_stages(stages)]
    run = tiny_runs()
    resource = ActgeoResource(data_dir=str(run.data_dir), database_url=run.db_url, **run.overrides)
    planned = plan(run.settings, run.layout, specs_for(["shard_stats", "edge_tiles"], stages))
    assert planned.order == ("raw_activations", "activation_mean", "normalized", "shard_stats", "edge_tiles")
    assert planned.first_stage() == ("shard_stats", run.settings.shard_keys)
    assert "shard_stats/shard-000.json is missing" in planned.reason("shard_stats")

    sensor = build_shard_sensor(stages)
    assert {t.job_name for t in sensor.targets} == {s.job for s in STAGES if s.sensor} | {"stats_job"}
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"actgeo": resource},
                                      sensor_name="shard_sensor")
    result = sensor(context)
    assert sorted((r.job_name, r.partition_key) for r in result.run_requests) == [
        ("stats_job", k) for k in run.settings.shard_keys]
    # the declaration as it is: nothing stale, nothing requested
    result = build_shard_sensor()(context)
    assert not result.run_requests and "is current" in result.skip_reason.skip_message


def test_every_asset_and_job_comes_from_the_declaration() -> None:
    from actgeo_assets.definitions import build_defs

    defs = build_defs("local", experiments=[])
    graph = defs.resolve_asset_graph()
    # the pipeline's stages, and the comparison across experiments (defs/experiments.py)
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {s.name for s in STAGES} | {
        "experiment_comparison"}
    for st in STAGES:
        node = graph.get(dg.AssetKey(st.name))
        assert {p.to_user_string() for p in node.parent_keys} == set(st.spec.upstream), st.name
        assert node.code_version == st.spec.version, st.name
        assert defs.resolve_assets_def(st.name).op.pool == (GPU_POOL if st.runs_on == GPU else None), st.name
        assert (node.automation_condition is not None) is st.eager, st.name
        job = defs.resolve_job_def(st.job)
        assert dg.AssetKey(st.name) in job.asset_layer.executable_asset_keys, st.name


def test_a_job_of_stages_with_different_partitions_is_refused() -> None:
    mixed = tuple(dataclasses.replace(s, job="one_job") if s.name in ("raw_activations", "activation_mean") else s
                  for s in STAGES)
    with pytest.raises(ValueError, match="one_job.*mixes partitionings"):
        build_jobs(mixed)
