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
from actgeo_assets.defs.automation import (
    INPUTS_TAG,
    PARTITION_TAG,
    SENSOR_MAX_RUNS_PER_TICK,
    SENSOR_TAG,
    shard_sensor,
)
from actgeo_assets.defs.pipeline import stage
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_tests.support.tiny_run import tiny_values

N_SHARDS = 25  # more than two ticks' worth of captures


def _resource(data_dir: str, **overrides: object) -> ActgeoResource:
    """The tiny run's settings with ``overrides`` over ``data_dir``; the model is never loaded (the sensor
    only plans)."""
    return ActgeoResource(data_dir=data_dir, **tiny_values(model=str(Path(data_dir).parent / "no-model"),
                                                           **overrides))


@pytest.fixture
def resource(tmp_path: Path) -> ActgeoResource:
    """The tiny run in 25 shards over an empty data directory: every capture is stale (nothing is computed
    here; the sensor only plans)."""
    return _resource(str(tmp_path / "data"), n_shards=N_SHARDS)


def _tick(resource: ActgeoResource, instance: dg.DagsterInstance) -> dg.SensorResult:
    ctx = dg.build_sensor_context(instance=instance, resources={"actgeo": resource}, sensor_name="shard_sensor",
                                  definitions=defs)
    return shard_sensor(ctx)


def _queue(instance: dg.DagsterInstance, job: str, partitions: list[str | None],
           requests: list[dg.RunRequest] | None = None) -> None:
    """Record running runs of ``job`` (one per partition) with the tags the sensor gave its requests."""
    given = {r.partition_key: dict(r.tags) for r in requests or []}
    for p in partitions:
        tags = {SENSOR_TAG: "shard_sensor", **({PARTITION_TAG: p} if p else {}), **given.get(p, {})}
        create_run_for_test(instance, job_name=job, status=dg.DagsterRunStatus.STARTED, tags=tags)


def test_requests_are_capped_and_topped_up_without_repeats(resource: ActgeoResource) -> None:
    assert SENSOR_MAX_RUNS_PER_TICK < N_SHARDS / 2
    expected = [f"shard-{i:03d}" for i in range(N_SHARDS)]
    capture = stage("raw_activations").job
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
            _queue(instance, capture, batch, result.run_requests)
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
        _queue(instance, stage("edge_tiles").job, ["shard-000__shard-001"])
        result = _tick(resource, instance)
        assert not result.run_requests
        assert result.skip_reason.skip_message == "waiting for the previous stage's runs"
        # runs without the sensor's tag (`actgeo run`, the UI) are not the sensor's to wait for
        with dg.instance_for_test() as other:
            create_run_for_test(other, job_name=stage("edge_tiles").job, status=dg.DagsterRunStatus.STARTED)
            assert len(_tick(resource, other).run_requests) == SENSOR_MAX_RUNS_PER_TICK


def test_a_failed_partition_is_not_retried_until_its_inputs_change(resource: ActgeoResource) -> None:
    """A run that failed (a bad file, a bug) is not requested every tick forever: only when what it reads
    changes (here: the settings), or when the user re-executes it. A canceled run is requested again."""
    capture = stage("raw_activations").job
    with dg.instance_for_test() as instance:
        first = _tick(resource, instance)
        assert all(len(r.tags[INPUTS_TAG]) == 16 for r in first.run_requests)
        _queue(instance, capture, [r.partition_key for r in first.run_requests], first.run_requests)
        runs = {r.tags[PARTITION_TAG]: r for r in instance.get_runs()}
        instance.report_run_failed(runs["shard-003"])
        instance.report_run_canceled(runs["shard-004"])
        again = [r.partition_key for r in _tick(resource, instance).run_requests]
        assert "shard-003" not in again  # failed, inputs unchanged
        assert again[0] == "shard-004"  # canceled: requested again, before the shards never requested
        # the same failure, other inputs (another budget: another run key): requested again
        changed = _resource(resource.data_dir, n_shards=N_SHARDS, budget=2500)
        assert "shard-003" in [r.partition_key for r in _tick(changed, instance).run_requests]


def test_the_skip_reason_names_a_failed_partition(resource: ActgeoResource) -> None:
    capture = stage("raw_activations").job
    one = _resource(resource.data_dir, n_shards=1)
    with dg.instance_for_test() as instance:
        first = _tick(one, instance)
        _queue(instance, capture, ["shard-000"], first.run_requests)
        (run,) = instance.get_runs()
        instance.report_run_failed(run)
        result = _tick(one, instance)
        assert not result.run_requests
        message = result.skip_reason.skip_message
        assert "shard-000" in message and run.run_id in message and "inputs have not changed" in message
