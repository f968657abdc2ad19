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
from collections.abc import Mapping

import dagster as dg

from actgeo_assets.defs import cli_hints
from actgeo_assets.defs.assets import activations, cards, graph, layers, lookup
from actgeo_assets.defs.automation import automation_sensor, build_nightly, build_shard_sensor, shard_sensor
from actgeo_assets.defs.experiments import add_experiment_job, comparison_asset, comparison_job
from actgeo_assets.defs.pipeline import JOBS, STAGES, jobs_of
from actgeo_assets.defs.resources import DATABASE_URL_ENV, ActgeoResource
from actgeo_assets.lib.config.experiments import EXPERIMENTS_DATA_DIR_ENV, list_experiments

#: Where the Definitions are served (one environment variable picks the deployment).
DEPLOYMENT_ENV = "ACTGEO_DEPLOYMENT"
DEPLOYMENTS = ("local", "k8s")


#: Stage name -> the builder of its asset (defs/assets/: one per declared stage).
BUILDERS = {**activations.BUILDERS, **graph.BUILDERS, **layers.BUILDERS, **cards.BUILDERS, **lookup.BUILDERS}


def pipeline_assets(experiment: str | None = None) -> list[dg.AssetsDefinition]:
    """The assets of defs/assets/, one per declared stage, in declaration order: the profile's run's, or
    ``experiment``'s (under its key prefix, on its own partitions); ValueError when an asset has no stage or
    a stage no asset."""
    declared = [s.name for s in STAGES]
    if set(BUILDERS) != set(declared):
        raise ValueError(f"defs/assets/ defines {sorted(BUILDERS)}, the pipeline declares {sorted(declared)}")
    return [BUILDERS[name](experiment) for name in declared]


def experiment_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The experiments of the data directory ``$ACTGEO_EXPERIMENTS_DATA_DIR``, else the one the deployment's
    settings name (``$ACTGEO_CONFIG``'s ``data_dir``, else ``data``), read when the Definitions load:
    "Reload definitions" in the UI picks up a new one. A bad experiment file raises naming it."""
    from actgeo_assets.lib.store.layout import resolve_data_dir
    from actgeo_assets.lib.store.run import resolve_run

    env = os.environ if environ is None else environ
    folder = env.get(EXPERIMENTS_DATA_DIR_ENV)
    data_dir = resolve_data_dir(folder) if folder else resolve_run(environ=env).data_dir
    return [e.name for e in list_experiments(data_dir)]


def _deployment(deployment: str | None) -> str:
    deployment = deployment or "local"
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"${DEPLOYMENT_ENV} is {deployment!r}; expected one of {', '.join(DEPLOYMENTS)}")
    return deployment


def deployment_assets(deployment: str | None = None, experiment: str | None = None) -> list[dg.AssetsDefinition]:
    """:func:`pipeline_assets` as ``deployment`` serves them: locally, ``BackfillPolicy.single_run()`` on the
    stages declared ``one_run_backfill``; on Kubernetes one run per partition (Dagster's default)."""
    assets = pipeline_assets(experiment)
    if _deployment(deployment) != "local":
        return assets
    one_run = {s.name for s in STAGES if s.one_run_backfill}
    return [a.with_attributes(backfill_policy=dg.BackfillPolicy.single_run())
            if a.key.path[-1] in one_run else a for a in assets]


def build_defs(deployment: str | None = None, experiments: list[str] | None = None) -> dg.Definitions:
    """The Definitions for ``deployment`` (one of :data:`DEPLOYMENTS`; None or empty: ``local``): the
    profile's run's pipeline, and each experiment's (``experiments``; None: :func:`experiment_names`) under
    its key prefix with its own jobs and shard sensor, and the comparison across them."""
    deployment = _deployment(deployment)
    names = experiment_names() if experiments is None else list(experiments)
    if deployment == "local":
        executor: dg.ExecutorDefinition = dg.in_process_executor
    else:
        from dagster_k8s import k8s_job_executor

        executor = k8s_job_executor
    return dg.Definitions(
        assets=[*deployment_assets(deployment), *[a for n in names for a in deployment_assets(deployment, n)],
                comparison_asset(names)],
        jobs=[*JOBS.values(), *[j for n in names for j in jobs_of(n).values()], comparison_job(), add_experiment_job],
        sensors=[shard_sensor, *[build_shard_sensor(STAGES, n) for n in names], automation_sensor],
        schedules=[build_nightly(names)],
        # The database URL (it may hold a password) comes through dg.EnvVar: the UI shows the variable's name,
        # never its value.
        resources={"actgeo": ActgeoResource(database_url=dg.EnvVar(DATABASE_URL_ENV))
                   if os.environ.get(DATABASE_URL_ENV) else ActgeoResource()},
        executor=executor,
    )


#: The experiments these Definitions hold (read when the module loads).
EXPERIMENTS: list[str] = experiment_names()
defs = build_defs(os.environ.get(DEPLOYMENT_ENV), EXPERIMENTS)
cli_hints.install()  # `dagster asset materialize` without --partition: a message, not a traceback
