"""Adding a shard file: the sensor captures and normalizes only it, recomputes only the tiles that involve
it, declarative automation re-merges, and the components equal a from-scratch run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from actgeo_assets.definitions import defs
from actgeo_assets.defs.automation import shard_sensor
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import split_corpus, tiny_values


def _tick(resource: ActgeoResource, instance: dg.DagsterInstance) -> list[tuple[str, str | None]]:
    """Evaluate the sensor once, apply its partition requests and run its run requests in-process.
    Returns (job, partition) of the runs it requested."""
    ctx = dg.build_sensor_context(instance=instance, resources={"actgeo": resource}, sensor_name="shard_sensor",
                                  definitions=defs)
    result = shard_sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        else:
            for key in req.partition_keys:
                instance.delete_dynamic_partition(req.partitions_def_name, key)
    ran = []
    for rr in result.run_requests or []:
        job = defs.resolve_job_def(rr.job_name)
        res = job.execute_in_process(instance=instance, partition_key=rr.partition_key, resources={"actgeo": resource},
                                     tags=rr.tags)
        assert res.success
        ran.append((rr.job_name, rr.partition_key))
    return ran


def _drain(resource: ActgeoResource, instance: dg.DagsterInstance) -> list[tuple[str, str | None]]:
    ran: list[tuple[str, str | None]] = []
    for _ in range(10):
        step = _tick(resource, instance)
        if not step:
            return ran
        ran += step
    raise AssertionError(f"sensor never settled: {ran}")


def _automation(instance: dg.DagsterInstance, cursor=None):
    """One declarative-automation evaluation: (new cursor, names of the merge assets it requests)."""
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = {k for k in ("components", "component_cards") if result.get_num_requested(dg.AssetKey(k)) > 0}
    return result.cursor, requested


def _merge(resource: ActgeoResource, instance: dg.DagsterInstance) -> None:
    dg.materialize(list(defs.assets), selection=["components", "component_cards"], instance=instance,
                   resources={"actgeo": resource})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_gemma2(tmp_path_factory.mktemp("tiny"))


def _resource(model_dir: str, corpus: Path, data: Path) -> ActgeoResource:
    """The tiny run on a corpus folder, one shard per file of 250 activations; l2 (no mean over all shards), so
    a new file's shard leaves the others' unit rows current."""
    return ActgeoResource(data_dir=str(data), **tiny_values(model=model_dir, corpus=str(corpus), shard_by="file",
                                                            budget_per_shard=250, normalization="l2"))


def test_new_shard_recomputes_only_its_tiles(tmp_path: Path, model_dir: str) -> None:
    corpus = tmp_path / "corpus"
    files = split_corpus(tmp_path / "all")
    corpus.mkdir()
    for f in files[:2]:
        shutil.copy(f, corpus / f.name)
    resource = _resource(model_dir, corpus, tmp_path / "data")
    instance = dg.DagsterInstance.ephemeral()

    first = _drain(resource, instance)
    assert sorted(p for j, p in first if j == "capture_job") == ["shard-a", "shard-b"]
    assert sorted(p for j, p in first if j == "tiles_job") == [
        "shard-a__shard-a", "shard-a__shard-b", "shard-b__shard-b"]
    assert not any(j == "mean_job" for j, _ in first), "l2 needs no mean"
    # the daemon's first evaluation only sets the cursor (eager reacts to updates after it)
    cursor, requested = _automation(instance)
    assert requested == set()
    _merge(resource, instance)
    cursor, requested = _automation(instance, cursor)
    assert requested == set(), "nothing changed since the merge"

    # nothing changed: the sensor asks for nothing
    assert _tick(resource, instance) == []

    # a third shard file arrives
    shutil.copy(files[2], corpus / files[2].name)
    second = _drain(resource, instance)
    assert [p for j, p in second if j == "capture_job"] == ["shard-c"]
    assert [p for j, p in second if j == "normalize_job"] == ["shard-c"]
    assert sorted(p for j, p in second if j == "tiles_job") == [
        "shard-a__shard-c", "shard-b__shard-c", "shard-c__shard-c"]
    assert len(second) == 5
    # declarative automation now wants the merge and the cards
    cursor, requested = _automation(instance, cursor)
    assert {"components", "component_cards"} <= requested, requested
    _merge(resource, instance)
    incremental = np.load(resource.layout().components_dir / "labels.npy")

    # from scratch on the same three files, in another data dir
    scratch = _resource(model_dir, corpus, tmp_path / "scratch")
    record = materialize_run(scratch, dg.DagsterInstance.ephemeral(), echo=lambda s: None)
    np.testing.assert_array_equal(incremental, np.load(scratch.layout().components_dir / "labels.npy"))
    assert record["n"] == 750
    summary = json.loads((resource.layout().components_dir / "summary.json").read_text())["summary"]
    assert summary == record["summary"]

    # a changed file re-captures only that shard
    with open(corpus / "b.jsonl", "a") as fh:
        fh.write(json.dumps({"text": "A new document about licences and code. " * 20,
                             "meta": {"pile_set_name": "Github"}}) + "\n")
    third = _drain(resource, instance)
    assert [p for j, p in third if j == "capture_job"] == ["shard-b"]
