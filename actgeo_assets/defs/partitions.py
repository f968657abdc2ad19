"""Partitions: dataset shards, and pairs of shards (i <= j) for the all-pairs join; and how a step
materializes the partitions of its run (:func:`materialize_each`).

Both are dynamic: the shard sensor (automation.py), ``actgeo run`` or the UI's "add partition" register
keys such as ``shard-000`` and ``shard-000__shard-001``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster import DynamicPartitionsDefinition

from actgeo_assets.lib.store.memory import MemoryPeak, peak_rss

SHARDS = "actgeo_shards"
SHARD_PAIRS = "actgeo_shard_pairs"

shard_partitions = DynamicPartitionsDefinition(name=SHARDS)
pair_partitions = DynamicPartitionsDefinition(name=SHARD_PAIRS)
_BY_EXPERIMENT: dict[tuple[str, str], DynamicPartitionsDefinition] = {}


def partitions_name(name: str, experiment: str | None) -> str:
    """The dynamic partitions ``name`` (:data:`SHARDS` or :data:`SHARD_PAIRS`) of ``experiment``: its own
    (``<experiment>__actgeo_shards``), so an experiment's shards never mix with another's; None: the
    profile's run."""
    return name if experiment is None else f"{experiment}__{name}"


def experiment_partitions(name: str, experiment: str | None) -> DynamicPartitionsDefinition:
    """The one :class:`DynamicPartitionsDefinition` of ``partitions_name(name, experiment)``."""
    if experiment is None:
        return {SHARDS: shard_partitions, SHARD_PAIRS: pair_partitions}[name]
    key = (name, experiment)
    if key not in _BY_EXPERIMENT:
        _BY_EXPERIMENT[key] = DynamicPartitionsDefinition(name=partitions_name(name, experiment))
    return _BY_EXPERIMENT[key]


def peak_metadata(peak: MemoryPeak | None) -> dict[str, Any]:
    """A step's peak resident memory (``lib.store.memory.peak_rss``) as materialization metadata."""
    if peak is None:
        return {}
    return {"peak_rss_gib": round(peak.gib, 3), "peak_memory": dg.MetadataValue.json(peak.to_dict())}


def materialize_each(
    context: dg.AssetExecutionContext, compute: Callable[[str], tuple[dict[str, Any], str | None]],
) -> dg.MaterializeResult:
    """Materialize every partition of this step, one after another, in this process.

    A run of one partition (`actgeo run`, the sensors, a UI launch of one partition) has one key; the local
    Definitions give the partitioned pipeline assets ``BackfillPolicy.single_run()``, so a backfill ("Materialize
    all") runs each stage as one run over all its partitions: one process start and one model load, not one per
    shard. ``compute(key)`` -> (that partition's metadata, its content hash or None); the metadata is recorded on
    that partition's materialization. The data version is the content hash when the run has one partition; a
    run over several records no data version (Dagster would give every partition the same one).

    A run over several partitions that fails part way still records the partitions it finished (their files are
    complete: every write is atomic): each gets a materialization event with its metadata before the error is
    raised, so the asset's Partitions tab shows them materialized and only the failed one failed. Those events carry
    no code or data version (Dagster adds its version tags only to a step's own output): Dagster still marks such
    a partition stale when an upstream partition changes, not when only this asset's code version does.
    """
    keys = list(context.partition_keys)
    versions: list[str | None] = []
    finished: list[tuple[str, dict[str, Any]]] = []
    for i, key in enumerate(keys, 1):
        if len(keys) > 1:
            context.log.info(f"partition {key} ({i}/{len(keys)} of this run)")
        try:
            with peak_rss() as mem:
                metadata, version = compute(key)
        except Exception:
            if finished:
                _record_finished(context, finished, failed=key, total=len(keys))
            raise
        metadata = {**metadata, **peak_metadata(mem.peak)}
        context.add_asset_metadata(metadata, partition_key=key)
        versions.append(version)
        finished.append((key, metadata))
    version = versions[0] if len(keys) == 1 else None
    return dg.MaterializeResult(data_version=dg.DataVersion(version) if version else None)


def _record_finished(context: dg.AssetExecutionContext, finished: list[tuple[str, dict[str, Any]]], failed: str,
                     total: int) -> None:
    """One materialization event per finished partition of a run that is about to fail at ``failed``."""
    for key, metadata in finished:
        context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=metadata))
    context.log.error(f"partition {failed} failed; the {len(finished)} of {total} partitions this run finished "
                      f"({', '.join(k for k, _ in finished)}) are recorded as materialized; rerun the others")
