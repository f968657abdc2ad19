"""The one Definitions object of actgeo (``dagster dev -m actgeo_assets.definitions``)."""

from __future__ import annotations

import os

import dagster as dg

from actgeo_assets.defs.assets.activations import activation_mean, normalized, raw_activations
from actgeo_assets.defs.assets.cards import component_cards
from actgeo_assets.defs.assets.graph import components, edge_tiles
from actgeo_assets.defs.automation import STAGE_JOBS, nightly_merge, shard_sensor
from actgeo_assets.defs.k8s import CLUSTER_JOBS
from actgeo_assets.defs.resources import DATABASE_URL_ENV, ActgeoResource

ASSETS = [raw_activations, activation_mean, normalized, edge_tiles, components, component_cards]

# The database URL (it may hold a password) comes through dg.EnvVar: the UI shows the variable's name, never
# its value. Unset, the resource falls back to its config file or a SQLite file in data_dir.
RESOURCES = {
    "actgeo": ActgeoResource(database_url=dg.EnvVar(DATABASE_URL_ENV))
    if os.environ.get(DATABASE_URL_ENV) else ActgeoResource(),
}

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[*STAGE_JOBS.values(), *CLUSTER_JOBS],
    sensors=[shard_sensor],
    schedules=[nightly_merge],
    resources=RESOURCES,
    # In-process: a multiprocess executor costs ~30 s of start-up per run on a 2-core machine (measured);
    # clusters use deploy/'s k8s_job_executor instead.
    executor=dg.in_process_executor,
)
