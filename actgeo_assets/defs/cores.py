"""How many cores a heavy step gets: the steps of the ``actgeo_gpu`` pool (capture, tiles) run at most
``limit`` at once (the instance's pool limit: 1 in the Makefile's dagster.local.yaml), so each gets the
process' cores divided by that limit; torch's threads are set to it (``torch_threads: 0``, the default)."""

from __future__ import annotations

import os

import dagster as dg

from actgeo_assets.lib.config.constants import GPU_POOL
from actgeo_assets.lib.config.settings import RunSettings


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def pool_limit(instance: dg.DagsterInstance, pool: str = GPU_POOL) -> int:
    """Steps of ``pool`` that may run at once on ``instance`` (1 when it sets no limit: this step cannot know
    what else runs)."""
    try:
        info = instance.event_log_storage.get_concurrency_info(pool)
        limit = getattr(info, "limit", None) or info.slot_count
    except Exception:  # noqa: BLE001 - storages without concurrency support
        limit = None
    return int(limit) if limit and limit > 0 else 1


def step_settings(context: dg.AssetExecutionContext, settings: RunSettings) -> RunSettings:
    """``settings`` with ``torch_threads`` resolved for this step when it is 0 (the cores the step gets)."""
    if settings.torch_threads > 0:
        return settings
    threads = max(1, available_cores() // pool_limit(context.instance))
    return settings.replace(torch_threads=threads)
