"""How `actgeo run` launches the pipeline's jobs (defs/pipeline.py: ``capture_job``, ``mean_job``,
``normalize_job``, ``tiles_job``, ``merge_job``, ``layers_job``, ``lookup_job``) in the calling process.

:func:`execute_stage_job` is what a Dagster run worker does for a launched run, in the calling process:
the run is created in the instance with the job's origin in the code location that `make ui` serves
(``dagster dev -m actgeo_assets.definitions``), its settings in the run config (so "Re-execute" in the UI
runs the same settings), and executed with compute-log capture (the run page's stdout/stderr). No process
is started per run (a cold run worker costs seconds), and the model stays loaded across the capture runs of
one invocation.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import dagster as dg

#: Groups the runs of one `actgeo run` (filter the UI's run list by it).
INVOCATION_TAG = "actgeo/invocation"
#: The module of the Definitions, and the name `dagster dev -m` gives its code location.
DEFINITIONS_MODULE = "actgeo_assets.definitions"
#: Override when the UI loads the code location under another name (a workspace.yaml's location_name).
LOCATION_ENV = "ACTGEO_CODE_LOCATION"

def new_invocation_id() -> str:
    """A readable, unique id for one `actgeo run`: local time and 6 random hex digits."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@functools.lru_cache(maxsize=1)
def _recon_repository() -> Any:
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    return ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs")


def definitions_with(data_dir: Any, experiment: str | None) -> None:
    """Make the Definitions this process executes hold ``experiment`` of ``data_dir``: they build the
    experiments of ``$ACTGEO_EXPERIMENTS_DATA_DIR`` when they load, so point it at ``data_dir`` and reload
    them when they were loaded from another folder or before the experiment's file was written."""
    import importlib

    from actgeo_assets.lib.config.experiments import EXPERIMENTS_DATA_DIR_ENV

    module = sys.modules.get(DEFINITIONS_MODULE)
    same_dir = os.environ.get(EXPERIMENTS_DATA_DIR_ENV) == str(data_dir)
    os.environ[EXPERIMENTS_DATA_DIR_ENV] = str(data_dir)
    if module is not None and (not same_dir or (experiment is not None and experiment not in module.EXPERIMENTS)):
        importlib.reload(module)
        _recon_repository.cache_clear()


def job_origin(job_name: str) -> Any:
    """The job's origin in the code location `make ui` loads: the UI matches a run to its job by it."""
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE),
        location_name=os.environ.get(LOCATION_ENV) or DEFINITIONS_MODULE,
    )
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME).get_job_origin(job_name)


def execute_stage_job(
    job_name: str,
    instance: dg.DagsterInstance,
    *,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    partition_key: str | None = None,
    asset_selection: list[str] | list[dg.AssetKey] | None = None,
) -> Any:
    """Create a run of the Definitions' job ``job_name`` (a subset of it with ``asset_selection``) and
    execute it in this process, like a run worker; raises on a failed step or blocking check."""
    from dagster._core.execution.api import create_execution_plan, execute_run

    recon_job = _recon_repository().get_reconstructable_job(job_name)
    keys = frozenset(a if isinstance(a, dg.AssetKey) else dg.AssetKey(a) for a in asset_selection) \
        if asset_selection else None
    target = recon_job.get_subset(asset_selection=keys) if keys else recon_job
    job_def = target.get_definition()
    all_tags = dict(tags)
    if partition_key is not None:
        all_tags.update(job_def.get_tags_for_partition_key(partition_key, selected_asset_keys=None))
    plan = create_execution_plan(target, run_config=run_config, tags=all_tags,
                                 instance_ref=instance.get_ref() if instance.is_persistent else None)
    run = instance.create_run_for_job(
        job_def=job_def, execution_plan=plan, run_config=run_config, tags=all_tags, asset_selection=keys,
        remote_job_origin=job_origin(job_name), job_code_origin=recon_job.get_python_origin(),
    )
    return execute_run(recon_job, run, instance, raise_on_error=True)
