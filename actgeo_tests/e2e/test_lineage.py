"""Lineage tells the truth: every file an asset reads belongs to an asset it declares upstream (or to itself).

A tiny pipeline is materialized one asset (and partition) at a time, in lineage order, through Dagster, while
Python's audit hooks record every file opened for reading or writing and every rename (atomic writes) under
the run's folder. A file's producer is the asset whose materialization wrote it; each file has one producer.
Parquet files are read by pyarrow's C++ code, which raises no audit event: ``pandas.read_parquet`` is wrapped
to record them."""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from actgeo_assets.definitions import pipeline_assets
from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS
from actgeo_assets.defs.pipeline import STAGES, stage
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class FileLog:
    """Files read and written under ``root`` while ``current`` names an asset (set by the test)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root.resolve())
        self.current: str | None = None
        self.reads: dict[str, set[str]] = defaultdict(set)
        self.writes: dict[str, set[str]] = defaultdict(set)

    def _path(self, path: object) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        text = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
        return text if text.startswith(self.root + os.sep) else None

    def read(self, path: object) -> None:
        if self.current and (p := self._path(path)):
            self.reads[self.current].add(p)

    def hook(self, event: str, args: tuple) -> None:
        if self.current is None:
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            p = self._path(path)
            if p is None:
                return
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
            (self.writes if writing else self.reads)[self.current].add(p)
        elif event == "os.rename":
            if p := self._path(args[1]):
                self.writes[self.current].add(p)


_LOGS: list[FileLog] = []


def _audit(event: str, args: tuple) -> None:  # audit hooks cannot be removed: one, forwarding to the live log
    if _LOGS:
        _LOGS[-1].hook(event, args)


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def file_log(tmp_path_factory: pytest.TempPathFactory):
    """Materialize every asset of the pipeline on the tiny run, one asset and partition at a time; the files
    each one read and wrote."""
    tmp = tmp_path_factory.mktemp("lineage")
    values = tiny_values(model=tiny_gemma2(tmp / "model"), compare_layers=[1, 2, 3], compare_budget=300)
    resource = ActgeoResource(data_dir=str(tmp / "data"), database_url=f"sqlite:///{tmp / 'db.sqlite'}", **values)
    settings, layout = resource.settings(), resource.layout()
    log = FileLog(layout.root)
    assets = pipeline_assets()
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SHARDS, settings.shard_keys)
    instance.add_dynamic_partitions(SHARD_PAIRS, settings.pair_keys)
    real_read_parquet = pd.read_parquet

    def read_parquet(path, *args, **kwargs):
        log.read(path)
        return real_read_parquet(path, *args, **kwargs)

    _LOGS.append(log)
    mp = pytest.MonkeyPatch()
    mp.setattr(pd, "read_parquet", read_parquet)
    try:
        for st in STAGES:
            for key in st.spec.keys(settings):
                log.current = st.name
                result = dg.materialize(assets, selection=[st.name], partition_key=key, instance=instance,
                                        resources={"actgeo": resource})
                log.current = None
                assert result.success, (st.name, key)
    finally:
        log.current = None
        mp.undo()
        _LOGS.remove(log)
    return log, layout, instance, settings


def test_every_file_has_one_producer(file_log) -> None:
    log, layout, _, _ = file_log
    producers: dict[str, set[str]] = defaultdict(set)
    for asset, paths in log.writes.items():
        for p in paths:
            producers[p].add(asset)
    lock = str(layout.lock.resolve())
    shared = {p: sorted(a) for p, a in producers.items() if len(a) > 1 and p != lock}
    assert not shared, f"files written by several assets: {shared}"
    assert {a for a, paths in log.writes.items() if paths - {lock}} == {s.name for s in STAGES}


def test_every_file_an_asset_reads_belongs_to_an_asset_it_declares_upstream(file_log) -> None:
    log, layout, instance, _ = file_log
    producer = {p: asset for asset, paths in log.writes.items() for p in paths}
    lock = str(layout.lock.resolve())
    graph = pipeline_assets()
    declared = {a.key.to_user_string(): {d.to_user_string() for d in a.dependency_keys} for a in graph}
    undeclared: dict[str, list[str]] = {}
    for asset, paths in log.reads.items():
        for p in sorted(paths - {lock}):
            owner = producer.get(p)
            assert owner is not None, f"{asset} read {p}, which no asset wrote"
            if owner != asset and owner not in declared[asset]:
                undeclared.setdefault(asset, []).append(f"{Path(p).relative_to(layout.root)} (from {owner})")
    assert not undeclared, f"files read from assets not declared upstream: {undeclared}"
    # and the declaration is no wider than the data flow: every declared upstream is read
    read_from = {asset: {producer[p] for p in paths if p in producer} - {asset} for asset, paths in log.reads.items()}
    for st in STAGES:
        assert set(st.spec.upstream) <= read_from.get(st.name, set()), (st.name, read_from.get(st.name))


def test_versions_come_from_the_stage_records(file_log) -> None:
    """Each asset's code version is its stage's version, and the data version Dagster records for it is the
    output hash its sidecar holds (what downstream stages record as their input)."""
    from actgeo_assets.lib.store.layout import load_json

    _, layout, instance, settings = file_log
    for asset in pipeline_assets():
        name = asset.key.to_user_string()
        spec = stage(name).spec
        assert asset.code_versions_by_key[asset.key] == spec.version, name
        for key in spec.keys(settings):
            event = instance.get_latest_materialization_event(asset.key) if key is None else next(
                r.event_log_entry for r in instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[key]), limit=1).records)
            tags = event.asset_materialization.tags or {}
            assert tags.get("dagster/code_version") == spec.version, (name, key)
            assert tags.get("dagster/data_version") == spec.output(load_json(spec.sidecar(layout, key))), (name, key)
