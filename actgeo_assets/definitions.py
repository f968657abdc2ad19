"""The one Definitions object of actgeo (``dagster dev -m actgeo_assets.definitions``)."""

from __future__ import annotations

import dagster as dg

from actgeo_assets.defs.assets.activations import activation_mean, normalized, raw_activations
from actgeo_assets.defs.assets.cards import component_cards
from actgeo_assets.defs.assets.graph import components, edge_tiles
from actgeo_assets.defs.automation import STAGE_JOBS, nightly_merge, shard_sensor
from actgeo_assets.defs.k8s import CLUSTER_JOBS
from actgeo_assets.defs.resources import ActgeoResource

ASSETS = [raw_activations, activation_mean, normalized, edge_tiles, components, component_cards]

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[*STAGE_JOBS.values(), *CLUSTER_JOBS],
    sensors=[shard_sensor],
    schedules=[nightly_merge],
    resources={"actgeo": ActgeoResource()},
    # In-process: a multiprocess executor costs ~30 s of start-up per run on a 2-core machine
    # (FACTS.md). Clusters use deploy/'s k8s_job_executor instead.
    executor=dg.in_process_executor,
)
