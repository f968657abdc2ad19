"""Automation: a sensor that keeps shards and their derived partitions current, declarative automation
for the merge, and a nightly schedule as the backstop.

- ``shard_sensor`` watches the corpus source: it registers the shards (one per corpus file with
  ``shard_by="file"``) and their pairs as dynamic partitions, drops removed ones, and requests the earliest
  stage of stale work among the stages declared ``sensor=True`` (defs/pipeline.py), by content hash
  (lib/stages/plan.py): capture and normalization of new or changed shards, the activation mean when
  ``center_l2`` needs it, and only the tiles whose shards changed. It
  requests at most ``SENSOR_MAX_RUNS_PER_TICK`` runs a tick (creating a run costs the daemon about half a
  second, so 210 tiles at once made one tick of two minutes), topping the stage up on later ticks with its
  partitions that have no queued or running run; a later stage waits until the runs of the one before it
  are done, so each stage sees the last one's outputs. A partition whose last sensor run FAILED is not
  requested again while its inputs are unchanged (the run carries ``actgeo/inputs``, a fingerprint of the
  settings and of the shard sources it reads): a bad file does not fail every 15 s forever; changing the
  file, the settings, or re-executing the run from the UI retries it.
- The stages declared ``eager=True`` (``components``, ``component_cards``) carry an eager automation condition:
  once the tiles are in, ``default_automation_condition_sensor`` re-merges and re-renders the cards.
- Both sensors run by default (``make ui`` starts the daemon that ticks them every 15 s), so a file added
  to a file-sharded corpus folder becomes new shards, tiles, components and cards without a click.
- ``actgeo_nightly`` re-materializes the eager stages daily, in case an automation tick was missed.
"""

import hashlib
import json
from typing import Any

import dagster as dg

from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS, experiment_partitions
from actgeo_assets.defs.pipeline import (
    STAGES,
    Stage,
    asset_key,
    build_jobs,
    eager_stages,
    job_name,
    jobs_of,
    sensor_stages,
    specs_for,
)
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.stages.activations import source_fingerprints
from actgeo_assets.lib.stages.plan import plan

SENSOR_TAG = "actgeo/sensor"
#: Fingerprint of what a sensor run reads (settings + its shards' sources): a failed run is retried only when
#: this changes.
INPUTS_TAG = "actgeo/inputs"
#: The tag in which Dagster records a run's partition key.
PARTITION_TAG = "dagster/partition"
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED]
#: The stages the sensor requests (``sensor=True`` in defs/pipeline.py), each by its job. They run with the
#: Definitions' executor: on Kubernetes each step in its own pod (defs/k8s.py).
SENSOR_STAGES = tuple(s.name for s in sensor_stages())
#: Seconds between the sensors' evaluations: each stage of new work waits for one tick.
SENSOR_INTERVAL_S = 15
#: Runs the shard sensor requests in one tick at most: the daemon creates each requested run within the tick, so
#: an uncapped tick over hundreds of tiles would block it for minutes (benchmarks/results/dagster_scale.md).
#: Later ticks (every SENSOR_INTERVAL_S) add the rest, faster than the queue drains them.
SENSOR_MAX_RUNS_PER_TICK = 10


def build_shard_sensor(stages: tuple[Stage, ...] = STAGES, experiment: str | None = None) -> dg.SensorDefinition:
    """The shard sensor of a pipeline declaration (in ``experiment``: its own, ``<experiment>__shard_sensor``,
    over its partitions and jobs): it targets the jobs of the stages declared ``sensor=True`` and requests
    their stale partitions, earliest stage first."""
    names = tuple(s.name for s in sensor_stages(stages))
    jobs = jobs_of(experiment) if stages is STAGES else build_jobs(stages, experiment)
    by_name = {s.name: s for s in stages}

    @dg.sensor(
        name=job_name("shard_sensor", experiment),
        jobs=list({by_name[a].job: jobs[job_name(by_name[a].job, experiment)] for a in names}.values()),
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(f"Experiment {experiment}: r" if experiment else "R")
        + "egisters the corpus' shards as partitions and requests the stale work stage by stage.",
    )
    def shard_sensor(context: dg.SensorEvaluationContext, actgeo: ActgeoResource) -> dg.SensorResult:
        return _evaluate(context, actgeo, names, stages, experiment)

    return shard_sensor


def _evaluate(context: dg.SensorEvaluationContext, actgeo: ActgeoResource, names: tuple[str, ...],
              stages: tuple[Stage, ...], experiment: str | None = None) -> dg.SensorResult:
    """One tick of the shard sensor over the stages ``names`` of ``stages`` (in ``experiment``)."""
    by_name = {s.name: s for s in stages}
    run = actgeo.context(experiment)
    settings, layout = run.settings, run.layout
    fingerprints = source_fingerprints(settings)
    requests: list = []
    for name, keys in ((SHARDS, settings.shard_keys), (SHARD_PAIRS, settings.pair_keys)):
        pdef = experiment_partitions(name, experiment)
        name = pdef.name
        have = set(context.instance.get_dynamic_partitions(name))
        if new := [k for k in keys if k not in have]:
            requests.append(pdef.build_add_request(new))
        if gone := sorted(have - set(keys)):
            requests.append(pdef.build_delete_request(gone))
    # The active runs before the plan: a run that finishes in between has written its outputs, which the plan
    # then finds current, so no partition is requested twice.
    active = context.instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE, tags={SENSOR_TAG: context.sensor_name}))
    if writer := _writer(layout.lock):  # `make demo` while `make ui` runs: its runs would only fail
        return dg.SensorResult(dynamic_partitions_requests=requests,
                               skip_reason=dg.SkipReason(f"waiting: {writer} is writing {layout.root.parent}"))
    todo = plan(settings, layout, specs_for(names, stages), memo={"fingerprints": fingerprints})
    next_stage = todo.first_stage(among=names)
    if next_stage is None:  # what follows is left to declarative automation
        return dg.SensorResult(dynamic_partitions_requests=requests, skip_reason=dg.SkipReason(
            f"every partition of {', '.join(names)} is current"))
    asset, parts = next_stage
    job = job_name(by_name[asset].job, experiment)
    if any(run.job_name != job for run in active):
        return dg.SensorResult(dynamic_partitions_requests=requests,
                               skip_reason=dg.SkipReason("waiting for the previous stage's runs"))
    busy = {run.tags.get(PARTITION_TAG) for run in active}
    run_key = settings.run_key()  # once a tick, not once a partition (210 tiles at scale)
    inputs = {p: inputs_fingerprint(run_key, fingerprints, p) for p in parts}
    failed = _failed_with_same_inputs(context, job, inputs)
    todo = [p for p in parts if p not in busy and p not in failed]
    if not todo:
        reason = (f"waiting for {len(active)} runs of {asset}" if active else
                  f"{asset}: the last run of {', '.join(str(p) for p in sorted(failed, key=str)[:5])}"
                  f"{' ...' if len(failed) > 5 else ''} failed and its inputs have not changed since "
                  f"(run {next(iter(failed.values()))}); fix the input or re-execute that run from the UI")
        return dg.SensorResult(dynamic_partitions_requests=requests, skip_reason=dg.SkipReason(reason))
    batch = todo[:SENSOR_MAX_RUNS_PER_TICK]
    context.log.info(f"stale {asset}: {len(parts)} partitions, {len(busy)} queued or running, {len(failed)} failed "
                     f"with unchanged inputs, requesting {len(batch)}: {batch}")
    runs = [dg.RunRequest(job_name=job, partition_key=p,
                          tags={SENSOR_TAG: context.sensor_name, INPUTS_TAG: inputs[p]}) for p in batch]
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)



shard_sensor = build_shard_sensor()


def inputs_fingerprint(run_key: dict[str, Any], fingerprints: dict[str, str], partition: str | None) -> str:
    """sha256 (16 hex) of the settings' run key (``RunSettings.run_key()``) and the sources of the shards
    ``partition`` reads (a shard, a pair ``a__b``, or None: every shard)."""
    shards = sorted(fingerprints) if partition is None else partition.split("__")
    blob = json.dumps([run_key, [(s, fingerprints.get(s)) for s in shards]],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _failed_with_same_inputs(context: dg.SensorEvaluationContext, job: str,
                             inputs: dict[str | None, str]) -> dict[str | None, str]:
    """Partition -> id of its latest sensor run of ``job`` when that run FAILED with the same inputs."""
    runs = context.instance.get_runs(filters=dg.RunsFilter(job_name=job, tags={SENSOR_TAG: context.sensor_name}),
                                     limit=max(50, 4 * len(inputs)))
    latest: dict[str | None, dg.DagsterRun] = {}
    for run in runs:  # newest first
        latest.setdefault(run.tags.get(PARTITION_TAG), run)
    return {p: run.run_id for p, run in latest.items()
            if p in inputs and run.status == dg.DagsterRunStatus.FAILURE and run.tags.get(INPUTS_TAG) == inputs[p]}


def _writer(lock: object) -> str | None:
    """The live `actgeo run` (on this host) that holds the data directory's writer lock, or None."""
    import socket

    from actgeo_assets.lib.store.lock import current_holder, process_alive

    info = current_holder(lock)  # type: ignore[arg-type]
    if not info or info.get("host", socket.gethostname()) != socket.gethostname():
        return None
    pid = info.get("pid")
    return f"PID {pid} ({info.get('command', 'actgeo run')})" if isinstance(pid, int) and process_alive(pid) else None


#: Declarative automation, on by default: Dagster's own sensor (named as the one it would create, stopped,
#: if none were given) evaluates the eager conditions of `components` and `component_cards`.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Evaluates the assets' automation conditions: re-merges and re-cards once new tiles are in.",
)


def build_nightly(experiments: list[str] = ()) -> dg.ScheduleDefinition:  # type: ignore[assignment]
    """The nightly backstop over the eager stages of the profile's run and of every experiment."""
    return dg.ScheduleDefinition(
        name="actgeo_nightly",
        cron_schedule="0 3 * * *",
        target=dg.AssetSelection.assets(*[asset_key(s.name, e) for e in (None, *experiments) for s in eager_stages()]),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Backstop: re-merge the tiles and re-render the cards once a day (every experiment's too).",
    )


nightly_merge = build_nightly()
