"""Materialize every asset of a run, in lineage order, on a Dagster instance (what `actgeo run`, and so
`make demo`, calls; the CLI owns the arguments and the printing).

Each step is a run of a job of the Definitions (defs/pipeline.py declares the stages `actgeo run` plans and their
jobs: ``capture_job``, ``mean_job``, ``normalize_job``, ``tiles_job``, ``merge_job``), executed in this process and recorded in the instance
(``DAGSTER_HOME``) with the code location's origin, the settings as run config, the tag
``actgeo/invocation=<id>`` shared by all runs of one call, and the captured stdout/stderr; so `make ui`
shows the lineage, the materializations, the runs grouped by invocation, and re-executes any of them.
Partitions whose outputs are current by content hash (each stage's record, composed by lib/stages/plan.py) are
skipped, so an interrupted run resumes; ``force=True`` recomputes everything.
An output file that no longer matches its recorded sha256 is recomputed, with a warning naming it.

Before any compute: the database is connected to once, and a stage that will capture checks that the
corpus deals a document to every shard. Runs of an earlier `actgeo run` that was killed (still STARTED in
the instance, their process gone) are marked failed. A failed step or a failed blocking asset check stops
the run with :class:`RunFailed` naming the asset, the partition and the check.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from actgeo_assets.defs.jobs import INVOCATION_TAG, definitions_with, execute_stage_job, new_invocation_id
from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS, partitions_name
from actgeo_assets.defs.pipeline import Stage, asset_key, job_name, job_stages, run_stages, specs_for, stage
from actgeo_assets.defs.resources import DATABASE_URL_ENV, ActgeoResource
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.stages.graph import load_record
from actgeo_assets.lib.stages.plan import Plan, plan
from actgeo_assets.lib.store.memory import peak_rss

#: Console logs at INFO: the assets' own progress lines, without Dagster's per-event DEBUG lines.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
#: Tags naming the process that ran a step, so a later `actgeo run` can tell a run whose process was killed.
PID_TAG, HOST_TAG = "actgeo/pid", "actgeo/host"
#: Tag naming the experiment a run belongs to (absent: the profile's own run).
EXPERIMENT_TAG = "actgeo/experiment"
#: Statuses of a run that has not finished.
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
              dg.DagsterRunStatus.CANCELING]


class RunFailed(ValueError):
    """A step of `actgeo run` failed, or one of its blocking asset checks did: the message names the asset
    (and partition), the check and why; nothing downstream of it ran."""


def fail_killed_runs(instance: dg.DagsterInstance, echo: Callable[[str], None] = print) -> list[str]:
    """Mark failed the unfinished runs that an `actgeo run` on this host started from a process that is
    gone (killed, e.g. SIGKILL or out of memory); returns their run ids."""
    from actgeo_assets.lib.store.lock import process_alive

    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED,
                                                       tags={HOST_TAG: socket.gethostname()})):
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid <= 0 or process_alive(pid):
            continue
        instance.report_run_failed(run, message=f"the process that ran it (PID {pid}) is gone: it was killed "
                                                f"mid-run; marked failed by the next `actgeo run`")
        echo(f"  marked failed: run {run.run_id[:8]} ({run.job_name}), its process {pid} was killed")
        failed.append(run.run_id)
    return failed


def preflight(resource: ActgeoResource, stale_raw: bool, experiment: str | None = None) -> None:
    """Checks that need more than the settings' values, before any compute: the database accepts a
    connection, and (when a capture will run) the corpus deals a document to every shard."""
    from actgeo_assets.lib.outputs.sql import check_database

    run = resource.context(experiment)
    check_database(run.database_url)
    if stale_raw:
        from actgeo_assets.lib.stages.activations import check_corpus

        check_corpus(run.settings, run.layout)


def _failure(instance: dg.DagsterInstance, label: str, exc: Exception) -> RunFailed:
    """One line for a failed step: the failed blocking checks (with their metadata), else the error."""
    from dagster._core.errors import DagsterAssetCheckFailedError

    if isinstance(exc, DagsterAssetCheckFailedError):
        checks = []
        for line in str(exc).splitlines()[1:]:
            asset, _, names = line.partition(": ")
            for name in filter(None, names.split(",")):
                key = dg.AssetCheckKey(dg.AssetKey.from_user_string(asset.strip()), name.strip())
                facts = ""
                try:
                    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
                    meta = record.event.asset_check_evaluation.metadata  # type: ignore[union-attr]
                    facts = " (" + ", ".join(f"{k}={getattr(v, 'value', v)}" for k, v in meta.items()) + ")"
                except Exception:  # noqa: BLE001 - the facts are an extra
                    pass
                checks.append(f"check {name.strip()} of asset {asset.strip()} failed{facts}")
        return RunFailed(f"{label}: blocking asset {'; '.join(checks) or str(exc)}; nothing downstream of it "
                         "was materialized")
    return RunFailed(f"{label} failed: {exc}")


def resource_run_config(resource: ActgeoResource) -> dict[str, Any]:
    """The resource's own values as the ``actgeo`` resource's run config (what the launchpad shows and a
    re-execution reuses). The database URL is left out: it reaches the run through ``$ACTGEO_DATABASE_URL``
    (:func:`database_url_env`), never the stored config; so is a field given as a ``dg.EnvVar``."""
    config: dict[str, Any] = {}
    for name in type(resource).model_fields:
        value = getattr(resource, name)
        if name == "database_url" or value is None or value == "" or hasattr(value, "env_var_name"):
            continue
        config[name] = list(value) if isinstance(value, tuple | list) else value
    return config


@contextlib.contextmanager
def database_url_env(resource: ActgeoResource) -> Iterator[None]:
    """While materializing: a database URL given to the resource itself, as ``$ACTGEO_DATABASE_URL`` (how
    the Definitions' resource receives it)."""
    url = resource.database_url
    if not url or hasattr(url, "env_var_name"):
        yield
        return
    old = os.environ.get(DATABASE_URL_ENV)
    os.environ[DATABASE_URL_ENV] = str(url)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DATABASE_URL_ENV, None)
        else:
            os.environ[DATABASE_URL_ENV] = old


def register_partitions(instance: dg.DagsterInstance, settings: RunSettings, experiment: str | None = None) -> None:
    """Add the run's shard and shard-pair keys to the dynamic partitions (its experiment's own; idempotent)."""
    for kind, keys in ((SHARDS, settings.shard_keys), (SHARD_PAIRS, settings.pair_keys)):
        name = partitions_name(kind, experiment)
        have = set(instance.get_dynamic_partitions(name))
        new = [k for k in keys if k not in have]
        if new:
            instance.add_dynamic_partitions(name, new)


def run_plan(resource: ActgeoResource, names: list[str] | None = None, experiment: str | None = None) -> Plan:
    """The plan of the stages ``names`` (default: those `actgeo run` plans) and their upstream, for the
    resource's settings, files and database (of ``experiment``, when given)."""
    names = names if names is not None else [s.name for s in run_stages()]
    run = resource.context(experiment)
    return plan(run.settings, run.layout, specs_for(names), database_url=run.database_url)


def materialize_run(
    resource: ActgeoResource,
    instance: dg.DagsterInstance,
    *,
    force: bool = False,
    echo: Callable[[str], None] = print,
    experiment: str | None = None,
) -> dict[str, Any]:
    """Materialize the stages `actgeo run` plans (defs/pipeline.py, ``in_run``), stale partitions only, in
    lineage order: the profile's own run, or ``experiment``'s assets (its jobs, partitions and folder).
    Returns the components summary record plus wall times per step."""
    definitions_with(resource.context().data_dir, experiment)
    with database_url_env(resource):
        return _materialize_run(resource, instance, force=force, echo=echo, experiment=experiment)


def _selection(st: Stage, planned: list[str]) -> list[str]:
    """What one launch of ``st``'s job runs: ``st`` and the later stages of the same job that `actgeo run` plans
    (the merge job: components, then component_cards, which its new labels make stale anyway)."""
    members = [s.name for s in job_stages(st.job)]
    return [n for n in members[members.index(st.name):] if n in planned]


def _materialize_run(
    resource: ActgeoResource,
    instance: dg.DagsterInstance,
    *,
    force: bool,
    echo: Callable[[str], None],
    experiment: str | None = None,
) -> dict[str, Any]:
    ctx = resource.context(experiment)
    settings, layout = ctx.settings, ctx.layout
    planned = [s.name for s in run_stages()]
    fail_killed_runs(instance, echo)
    first = run_plan(resource, experiment=experiment).first_stage(among=planned)
    preflight(resource, force or (first is not None and first[0] == planned[0]), experiment)
    register_partitions(instance, settings, experiment)
    times: dict[str, float] = {}
    warned: set[str] = set()
    # Each step is a run of the stage's job in the Definitions, its settings in the run config, all of this
    # invocation's runs under one tag.
    run_config = {**RUN_CONFIG, "resources": {"actgeo": {"config": resource_run_config(resource)}}}
    tags = {INVOCATION_TAG: new_invocation_id(), "actgeo/profile": settings.profile, PID_TAG: str(os.getpid()),
            HOST_TAG: socket.gethostname(), **({EXPERIMENT_TAG: experiment} if experiment else {})}

    def run(name: str, partition: str | None = None) -> list[str]:
        st = stage(name)
        selection = _selection(st, planned)
        label = " + ".join(selection) + (f"[{partition}]" if partition else "")
        t0 = time.perf_counter()
        try:
            with peak_rss() as mem:
                result = execute_stage_job(job_name(st.job, experiment), instance, run_config=run_config, tags=tags,
                                           partition_key=partition,
                                           asset_selection=[asset_key(n, experiment) for n in selection])
        except (ValueError, OSError, dg.DagsterError) as exc:
            echo(f"  {label:<44} FAILED")
            raise _failure(instance, label, exc) from exc
        seconds = time.perf_counter() - t0
        times[label] = seconds
        assert mem.peak is not None
        record_peak(layout.memory_file, label, mem.peak.to_dict())
        echo(f"  {label:<44} {'ok' if result.success else 'FAILED'} in {seconds:6.1f} s  (peak RSS "
             f"{mem.peak.gib:.2f} GiB{'' if mem.peak.method == 'vmhwm' else ', process'})")
        return selection

    echo(f"actgeo: {settings.describe()}")
    echo(f"        {'experiment ' + experiment + ', ' if experiment else ''}data in {layout.root}")
    t_all = time.perf_counter()
    if force:
        done: set[str] = set()
        for st in run_stages():
            if st.name in done or not st.spec.enabled(settings):
                continue
            for key in st.spec.keys(settings):
                ran = run(st.name, key)
            done.update(ran)
    # Stage by stage: re-plan after each stage, since its outputs make the next stage stale.
    finished: set[str] = set()
    while (next_stage := (todo := run_plan(resource, experiment=experiment)).first_stage(among=planned)) is not None:
        for problem in todo.problems:
            if problem not in warned:
                warned.add(problem)
                echo(f"  warning: {problem}")
        name, parts = next_stage
        if name in finished:
            raise RuntimeError(f"{name} is still stale after it ran: {todo.reason(name)}")
        if not force:
            echo(f"  {name}: {todo.reason(name)}")
        for part in parts:
            finished.update(run(name, part))
    if not times:
        echo("  every stage is current (their recorded inputs and files match); --force recomputes them")
    times["total"] = time.perf_counter() - t_all
    record = load_record(settings, layout)
    return {**record.to_json(), "times": times, "report": str(layout.report), "database_url": ctx.database_url,
            "experiment": experiment, "root": str(layout.root)}


def record_peak(path: Path, step: str, peak: dict[str, Any]) -> None:
    """Record a step's peak memory (``lib.store.memory.MemoryPeak.to_dict()``) in the run folder's
    ``memory.json`` (step label -> its last measurement, with the time it was taken)."""
    from actgeo_assets.lib.store.layout import load_json, save_json

    try:
        table = load_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        table = {}
    table[step] = {**peak, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    save_json(path, table)


def open_instance(warn: Callable[[str], None] = print) -> dg.DagsterInstance:
    """The instance at ``$DAGSTER_HOME`` (created if absent), so `make ui` shows the runs; without it an
    ephemeral one, and ``warn`` says that the runs are not recorded."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        os.makedirs(home, exist_ok=True)
        return dg.DagsterInstance.get()
    warn("actgeo: DAGSTER_HOME is not set: runs are not recorded for the UI")
    return dg.DagsterInstance.ephemeral()


def materialize_layers(
    resource: ActgeoResource,
    instance: dg.DagsterInstance,
    *,
    force: bool = False,
    echo: Callable[[str], None] = print,
    experiment: str | None = None,
) -> dict[str, Any]:
    """Run the ``layers_job`` (``experiment``'s, when given) like a stage of `actgeo run` (skipped when ``layers/`` is current for these
    settings, unless ``force``), then re-render the cards when the plan says they are stale and everything else
    `actgeo run` plans is current (the report shows the layer comparison only when it is current).

    Returns ``{"files": {name: path}, "cards": bool (the report shows the section), "current": bool (nothing
    was computed), "seconds": float}``."""
    from actgeo_assets.lib.stages.layers import FILES

    definitions_with(resource.context().data_dir, experiment)
    with database_url_env(resource):
        ctx = resource.context(experiment)
        settings, layout = ctx.settings, ctx.layout
        fail_killed_runs(instance, echo)
        run_config = {**RUN_CONFIG, "resources": {"actgeo": {"config": resource_run_config(resource)}}}
        tags = {INVOCATION_TAG: new_invocation_id(), "actgeo/profile": settings.profile, PID_TAG: str(os.getpid()),
                HOST_TAG: socket.gethostname(), **({EXPERIMENT_TAG: experiment} if experiment else {})}
        echo(f"actgeo: layers {list(settings.compare_layers)} of {settings.model}, {settings.compare_budget:,} "
             f"activations")
        t0 = time.perf_counter()
        planned = [s.name for s in run_stages()]
        todo = run_plan(resource, [*planned, "layers"], experiment)
        current = not force and todo.is_current("layers")
        if current:
            echo(f"  {'layers':<44} current ({layout.layers_file('layers.json')} matches these settings; "
                 "--force computes it again)")
        else:
            try:
                execute_stage_job(job_name(stage("layers").job, experiment), instance, run_config=run_config,
                                  tags=tags)
            except (ValueError, OSError, dg.DagsterError) as exc:
                raise _failure(instance, "layers", exc) from exc
            echo(f"  {'layers':<44} ok in {time.perf_counter() - t0:6.1f} s")
            todo = run_plan(resource, [*planned, "layers"], experiment)
        cards = todo.is_current("component_cards") and todo.is_current("layers")
        if todo.first_stage(among=planned) == ("component_cards", [None]):
            t1 = time.perf_counter()
            try:
                execute_stage_job(job_name(stage("component_cards").job, experiment), instance, run_config=run_config,
                                  tags=tags, asset_selection=[asset_key("component_cards", experiment)])
            except (ValueError, OSError, dg.DagsterError) as exc:
                raise _failure(instance, "component_cards", exc) from exc
            echo(f"  {'component_cards (the report)':<44} ok in {time.perf_counter() - t1:6.1f} s")
            cards = True
        return {"files": {name: layout.layers_file(name) for name in FILES}, "cards": cards, "current": current,
                "seconds": time.perf_counter() - t0}
