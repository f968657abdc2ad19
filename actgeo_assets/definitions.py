"""The one Definitions object of actgeo (``dagster dev -m actgeo_assets.definitions``), per deployment."""

from __future__ import annotations

import os

import dagster as dg

from actgeo_assets.defs import cli_hints
from actgeo_assets.defs.assets.activations import activation_mean, normalized, raw_activations
from actgeo_assets.defs.assets.cards import component_cards
from actgeo_assets.defs.assets.graph import components, edge_tiles
from actgeo_assets.defs.assets.layers import layer_geometry
from actgeo_assets.defs.assets.lookup import neighbour_index
from actgeo_assets.defs.automation import automation_sensor, nightly_merge, shard_sensor
from actgeo_assets.defs.jobs import LAYER_SWEEP_JOB, STAGE_JOBS
from actgeo_assets.defs.resources import DATABASE_URL_ENV, ActgeoResource

ASSETS = [raw_activations, activation_mean, normalized, edge_tiles, components, component_cards, neighbour_index,
          layer_geometry]

# The database URL (it may hold a password) comes through dg.EnvVar: the UI shows the variable's name, never
# its value. Unset, the resource falls back to its config file or a SQLite file in data_dir.
RESOURCES = {
    "actgeo": ActgeoResource(database_url=dg.EnvVar(DATABASE_URL_ENV))
    if os.environ.get(DATABASE_URL_ENV) else ActgeoResource(),
}

#: Where the Definitions are served: ``local`` (default: `make ui`, `actgeo run`, docker compose) has the
#: stage jobs only; ``k8s`` (deploy/helm/values.yaml sets it) adds the cluster_* jobs, each running its
#: steps in their own pods with dagster-k8s' k8s_job_executor (defs/k8s.py).
DEPLOYMENT_ENV = "ACTGEO_DEPLOYMENT"
DEPLOYMENTS = ("local", "k8s")


#: The partitioned stages of the pipeline. Locally a backfill ("Materialize all") runs each of them as ONE run over
#: all its partitions (one process start, one model load: defs/partitions.py materialize_each); on Kubernetes
#: each partition stays its own run, so a backfill spreads the shards and tiles over the cluster's pods.
SINGLE_RUN_BACKFILL = ("raw_activations", "normalized", "edge_tiles")


def local_assets() -> list:
    """:data:`ASSETS` with ``BackfillPolicy.single_run()`` on :data:`SINGLE_RUN_BACKFILL`."""
    return [a.with_attributes(backfill_policy=dg.BackfillPolicy.single_run())
            if a.key.to_user_string() in SINGLE_RUN_BACKFILL else a for a in ASSETS]


def build_defs(deployment: str | None = None) -> dg.Definitions:
    """The Definitions for ``deployment`` (one of :data:`DEPLOYMENTS`; None or empty: ``local``)."""
    deployment = deployment or "local"
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"${DEPLOYMENT_ENV} is {deployment!r}; expected one of {', '.join(DEPLOYMENTS)}")
    jobs = [*STAGE_JOBS.values(), LAYER_SWEEP_JOB]
    assets = local_assets() if deployment == "local" else ASSETS
    if deployment == "k8s":
        from actgeo_assets.defs.k8s import cluster_jobs

        jobs += cluster_jobs()
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        sensors=[shard_sensor, automation_sensor],
        schedules=[nightly_merge],
        resources=RESOURCES,
        # In-process: a multiprocess executor costs ~30 s of start-up per run on a 2-core machine (measured);
        # the cluster jobs bring their own k8s_job_executor.
        executor=dg.in_process_executor,
    )


defs = build_defs(os.environ.get(DEPLOYMENT_ENV))
cli_hints.install()  # `dagster asset materialize` without --partition: a message, not a traceback
