"""Materialize every asset of a run, in lineage order, on a Dagster instance (what `actgeo run`, and so
`make demo`, calls; the CLI owns the arguments and the printing).

Each step is a real Dagster run recorded in the instance (``DAGSTER_HOME``), so `make ui` afterwards shows
the lineage, the materializations and their metadata. Partitions whose outputs are current by content hash
(lib/incremental.py) are skipped, so an interrupted run resumes; ``force=True`` recomputes everything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.incremental import plan
from actgeo_assets.lib.settings import RunSettings
from actgeo_assets.lib.stages.graph import load_record

#: Console logs at INFO: the assets' own progress lines, without Dagster's per-event DEBUG lines.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def register_partitions(instance: dg.DagsterInstance, settings: RunSettings) -> None:
    """Add the run's shard and shard-pair keys to the dynamic partitions (idempotent)."""
    for name, keys in ((SHARDS, settings.shard_keys), (SHARD_PAIRS, settings.pair_keys)):
        have = set(instance.get_dynamic_partitions(name))
        new = [k for k in keys if k not in have]
        if new:
            instance.add_dynamic_partitions(name, new)


def materialize_run(
    resource: ActgeoResource,
    instance: dg.DagsterInstance,
    *,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Materialize raw_activations, activation_mean, normalized, edge_tiles, components, component_cards.

    Returns the components summary record plus wall times per step.
    """
    from actgeo_assets.definitions import ASSETS

    settings = resource.settings()
    resources = {"actgeo": resource}
    register_partitions(instance, settings)
    times: dict[str, float] = {}

    def run(asset: str, partition: str | None = None) -> None:
        label = f"{asset}[{partition}]" if partition else asset
        t0 = time.perf_counter()
        result = dg.materialize(ASSETS, selection=[asset], partition_key=partition, instance=instance,
                                resources=resources, raise_on_error=True, run_config=RUN_CONFIG,
                                tags={"actgeo/profile": settings.profile})
        seconds = time.perf_counter() - t0
        times[label] = seconds
        echo(f"  {label:<44} {'ok' if result.success else 'FAILED'} in {seconds:6.1f} s")

    echo(f"actgeo: {settings.describe()}")
    echo(f"        data in {resource.layout().root}")
    t_all = time.perf_counter()
    if force:
        for asset, parts in (("raw_activations", settings.shard_keys), ("activation_mean", [None]),
                             ("normalized", settings.shard_keys), ("edge_tiles", settings.pair_keys),
                             ("components", [None])):
            for part in parts:
                run(asset, part)
    # Stage by stage: re-plan after each stage, since its outputs make the next stage stale.
    done: set[str] = set()
    while (stage := plan(settings, resource.layout()).first_stage()) is not None:
        asset, parts = stage
        if asset in done:
            raise RuntimeError(f"{asset} is still stale after it ran: {parts}")
        for part in parts:
            run(asset, part)
        done.add(asset)
    run("component_cards")  # cheap, and card settings (ranks, contexts) are not part of the plan
    times["total"] = time.perf_counter() - t_all
    record = load_record(settings, resource.layout())
    return {**record.to_json(), "times": times, "report": str(resource.layout().report),
            "database_url": resource.db_url()}


def open_instance(warn: Callable[[str], None] = print) -> dg.DagsterInstance:
    """The instance at ``$DAGSTER_HOME`` (created if absent), so `make ui` shows the runs; without it an
    ephemeral one, and ``warn`` says that the runs are not recorded."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        os.makedirs(home, exist_ok=True)
        return dg.DagsterInstance.get()
    warn("actgeo: DAGSTER_HOME is not set: runs are not recorded for the UI")
    return dg.DagsterInstance.ephemeral()
