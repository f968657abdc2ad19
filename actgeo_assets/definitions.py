"""The one Definitions object of actgeo (``dagster dev -m actgeo_assets.definitions``), per deployment.

Everything here is derived from the pipeline's declaration (defs/pipeline.py); a deployment only chooses how
steps execute and how a backfill is split into runs:

- ``local`` (default: `make ui`, `actgeo run`, docker compose): steps run in the run's process
  (in-process executor: a multiprocess executor starts a process per step, slow on a small machine), and a
  backfill of a stage with ``one_run_backfill`` is one run over all its partitions;
- ``k8s`` (deploy/helm/values.yaml sets ``ACTGEO_DEPLOYMENT=k8s`` on the code server and on every run and step
  pod): dagster-k8s' ``k8s_job_executor`` runs each step in its own pod, sized by its asset's op tags
  (defs/k8s.py), and every partition of a backfill is its own run.
"""

from __future__ import annotations

import os

import dagster as dg

from actgeo_assets.defs import assets as asset_modules
from actgeo_assets.defs import cli_hints
from actgeo_assets.defs.automation import automation_sensor, nightly_merge, shard_sensor
from actgeo_assets.defs.pipeline import JOBS, STAGES
from actgeo_assets.defs.resources import DATABASE_URL_ENV, ActgeoResource

#: Where the Definitions are served (one environment variable picks the deployment).
DEPLOYMENT_ENV = "ACTGEO_DEPLOYMENT"
DEPLOYMENTS = ("local", "k8s")


def pipeline_assets() -> list[dg.AssetsDefinition]:
    """The assets of defs/assets/, one per declared stage, in declaration order; ValueError when an asset has
    no stage or a stage no asset."""
    found = {a.key.to_user_string(): a for a in dg.load_assets_from_package_module(asset_modules)
             if isinstance(a, dg.AssetsDefinition)}
    declared = [s.name for s in STAGES]
    if set(found) != set(declared):
        raise ValueError(f"defs/assets/ defines {sorted(found)}, the pipeline declares {sorted(declared)}")
    return [found[name] for name in declared]


def _deployment(deployment: str | None) -> str:
    deployment = deployment or "local"
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"${DEPLOYMENT_ENV} is {deployment!r}; expected one of {', '.join(DEPLOYMENTS)}")
    return deployment


def deployment_assets(deployment: str | None = None) -> list[dg.AssetsDefinition]:
    """:func:`pipeline_assets` as ``deployment`` serves them: locally, ``BackfillPolicy.single_run()`` on the
    stages declared ``one_run_backfill``; on Kubernetes one run per partition (Dagster's default)."""
    assets = pipeline_assets()
    if _deployment(deployment) != "local":
        return assets
    one_run = {s.name for s in STAGES if s.one_run_backfill}
    return [a.with_attributes(backfill_policy=dg.BackfillPolicy.single_run())
            if a.key.to_user_string() in one_run else a for a in assets]


def build_defs(deployment: str | None = None) -> dg.Definitions:
    """The Definitions for ``deployment`` (one of :data:`DEPLOYMENTS`; None or empty: ``local``)."""
    deployment = _deployment(deployment)
    if deployment == "local":
        executor: dg.ExecutorDefinition = dg.in_process_executor
    else:
        from dagster_k8s import k8s_job_executor

        executor = k8s_job_executor
    return dg.Definitions(
        assets=deployment_assets(deployment),
        jobs=list(JOBS.values()),
        sensors=[shard_sensor, automation_sensor],
        schedules=[nightly_merge],
        # The database URL (it may hold a password) comes through dg.EnvVar: the UI shows the variable's name,
        # never its value.
        resources={"actgeo": ActgeoResource(database_url=dg.EnvVar(DATABASE_URL_ENV))
                   if os.environ.get(DATABASE_URL_ENV) else ActgeoResource()},
        executor=executor,
    )


defs = build_defs(os.environ.get(DEPLOYMENT_ENV))
cli_hints.install()  # `dagster asset materialize` without --partition: a message, not a traceback
