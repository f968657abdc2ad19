"""Materialize every asset of a run, in lineage order, on a Dagster instance (what `make demo` calls).

Each step is a real Dagster run recorded in the instance (``DAGSTER_HOME``), so `make ui` afterwards shows
the lineage, the materializations and their metadata. Partitions whose outputs are current by content hash
(lib/incremental.py) are skipped, so an interrupted run resumes; ``force=True`` recomputes everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib import pipeline
from actgeo_assets.lib.incremental import plan
from actgeo_assets.lib.settings import RunSettings

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
    record, _, _ = pipeline.load_components(settings, resource.layout())
    return {**record, "times": times, "report": str(resource.layout().cards_dir / "report.html"),
            "database_url": resource.db_url()}


def format_summary(record: dict[str, Any]) -> str:
    """The study-style summary table as plain text."""
    s = record["summary"]
    lines = [
        f"run: {record['description']}",
        f"  activations (N)                        {record['n']:>12,}",
        f"  components                             {s['n_components']:>12,}",
        f"  largest                                {s['largest']:>12,}  ({100 * s['largest_fraction']:.1f}% of N)",
        f"  non-singleton components besides it    {s['non_singleton']:>12,}",
        f"  singletons                             {s['singletons']:>12,}",
        "  top-20 sizes: " + ", ".join(f"{x:,}" for x in s["top_sizes"]),
    ]
    return "\n".join(lines)


def run_from_args(args: Any) -> int:
    """Build the resource from CLI args, materialize everything, print the summary. Returns exit code."""
    import json
    import os
    import sys

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in ActgeoResource.model_fields:
            print(f"actgeo: bad --set {item!r}: use KEY=VALUE with KEY one of "
                  f"{sorted(k for k in ActgeoResource.model_fields if k not in ('profile', 'data_dir', 'config_file'))}",
                  file=sys.stderr)
            return 2
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    try:
        resource = ActgeoResource(config_file=args.config, profile=args.profile, data_dir=args.data_dir,
                                  database_url=args.database_url, **overrides)
        resource.settings()
    except (ValueError, TypeError) as exc:
        print(f"actgeo: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("DAGSTER_HOME"):
        os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
        instance = dg.DagsterInstance.get()
    else:
        instance = dg.DagsterInstance.ephemeral()
        print("actgeo: DAGSTER_HOME is not set: runs are not recorded for the UI", file=sys.stderr)
    record = materialize_run(resource, instance, force=args.force)
    print()
    print(format_summary(record))
    print()
    print(f"report:    {record['report']}")
    print(f"database:  {record['database_url']}  (table actgeo_components, run_id {record['run_id']})")
    print(f"figures:   {resource.layout().components_dir}")
    print(f"wall time: {record['times']['total']:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Same as ``actgeo run``."""
    import argparse

    from actgeo_assets.cli import add_run_arguments

    parser = argparse.ArgumentParser(prog="python -m actgeo_assets.runner", description=__doc__)
    add_run_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
