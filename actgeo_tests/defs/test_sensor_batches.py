"""The shard sensor at scale: it requests at most SENSOR_MAX_RUNS_PER_TICK runs a tick (the daemon creates each
requested run inside the tick, ~0.5 s a run: 210 tiles at once made a 119 s tick, benchmarks/dagster_scale.py),
tops the stage up on later ticks with the partitions that have no queued or running run, never requests a
partition twice, and still waits for the previous stage's runs before the next stage."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from actgeo_assets.definitions import defs
from actgeo_assets.defs.automation import PARTITION_TAG, SENSOR_MAX_RUNS_PER_TICK, SENSOR_TAG, shard_sensor
from actgeo_assets.defs.jobs import STAGE_JOBS
from actgeo_assets.defs.resources import ActgeoResource

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mini_corpus.jsonl"
N_SHARDS = 25  # more than two ticks' worth of captures


@pytest.fixture
def resource(tmp_path: Path) -> ActgeoResource:
    """Settings of 25 shards over an empty data directory: every capture is stale (nothing is computed here;
    the sensor only plans)."""
    return ActgeoResource(profile="demo", data_dir=str(tmp_path / "data"), model=str(tmp_path / "no-model"),
                          layer=2, corpus=str(FIXTURE), n_shards=N_SHARDS, budget=2000)


def _tick(resource: ActgeoResource, instance: dg.DagsterInstance) -> dg.SensorResult:
    ctx = dg.build_sensor_context(instance=instance, resources={"actgeo": resource}, sensor_name="shard_sensor",
                                  definitions=defs)
    return shard_sensor(ctx)


def _queue(instance: dg.DagsterInstance, job: str, partitions: list[str | None]) -> None:
    """Record running runs of ``job`` (one per partition) with the tags the sensor gives its requests."""
    for p in partitions:
        tags = {SENSOR_TAG: "shard_sensor", **({PARTITION_TAG: p} if p else {})}
        create_run_for_test(instance, job_name=job, status=dg.DagsterRunStatus.STARTED, tags=tags)


def test_requests_are_capped_and_topped_up_without_repeats(resource: ActgeoResource) -> None:
    assert SENSOR_MAX_RUNS_PER_TICK < N_SHARDS / 2
    expected = [f"shard-{i:03d}" for i in range(N_SHARDS)]
    capture = STAGE_JOBS["raw_activations"].name
    requested: list[str] = []
    with dg.instance_for_test() as instance:
        for _ in range(N_SHARDS):  # enough ticks; each must add something until every shard is queued
            result = _tick(resource, instance)
            batch = [r.partition_key for r in result.run_requests or []]
            if not batch:
                break
            assert len(batch) <= SENSOR_MAX_RUNS_PER_TICK, batch
            assert {r.job_name for r in result.run_requests} == {capture}
            assert all(r.tags[SENSOR_TAG] == "shard_sensor" for r in result.run_requests)
            requested += batch
            _queue(instance, capture, batch)
        # every shard requested exactly once, in order, over ceil(25 / cap) ticks
        assert requested == expected
        assert result.skip_reason.skip_message == f"waiting for {N_SHARDS} runs of raw_activations"
        # a run of the batch ends without writing its output (failed or canceled): only it is requested again
        run = instance.get_runs(filters=dg.RunsFilter(tags={PARTITION_TAG: "shard-007"}))[0]
        instance.report_run_canceled(run)
        again = _tick(resource, instance)
        assert [r.partition_key for r in again.run_requests] == ["shard-007"]


def test_waits_for_another_stages_runs(resource: ActgeoResource) -> None:
    with dg.instance_for_test() as instance:
        _queue(instance, STAGE_JOBS["edge_tiles"].name, ["shard-000__shard-001"])
        result = _tick(resource, instance)
        assert not result.run_requests
        assert result.skip_reason.skip_message == "waiting for the previous stage's runs"
        # runs without the sensor's tag (`actgeo run`, the UI) are not the sensor's to wait for
        with dg.instance_for_test() as other:
            create_run_for_test(other, job_name=STAGE_JOBS["edge_tiles"].name, status=dg.DagsterRunStatus.STARTED)
            assert len(_tick(resource, other).run_requests) == SENSOR_MAX_RUNS_PER_TICK
