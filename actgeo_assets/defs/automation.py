"""Sensors and schedules: register shards as dynamic partitions and start the runs they need."""

import dagster as dg

from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS, pair_partitions, shard_partitions
from actgeo_assets.defs.resources import ActgeoResource


@dg.sensor(
    name="shard_sensor",
    target=dg.AssetSelection.assets("raw_activations", "normalized"),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Registers the configured run's dataset shards (and their pairs) as partitions and "
    "requests capture + normalization of shards that are new.",
)
def shard_sensor(context: dg.SensorEvaluationContext, actgeo: ActgeoResource) -> dg.SensorResult:
    settings = actgeo.settings()
    have_shards = set(context.instance.get_dynamic_partitions(SHARDS))
    have_pairs = set(context.instance.get_dynamic_partitions(SHARD_PAIRS))
    new_shards = [k for k in settings.shard_keys if k not in have_shards]
    new_pairs = [k for k in settings.pair_keys if k not in have_pairs]
    requests = []
    if new_shards:
        requests.append(shard_partitions.build_add_request(new_shards))
    if new_pairs:
        requests.append(pair_partitions.build_add_request(new_pairs))
    runs = [dg.RunRequest(partition_key=k, asset_selection=[dg.AssetKey("raw_activations")]) for k in new_shards]
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new shards"))
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)
