"""The one declaration of the pipeline: every asset, the job that runs it, what it runs on, and who launches it.

Everything Dagster-facing is derived from :data:`STAGES`: each asset's partitions, upstream assets, code
version, pool, Kubernetes step config and automation condition (:func:`asset_args`); the jobs (:data:`JOBS`);
the shard sensor's jobs and the stages it plans; the nightly schedule; the backfill policy per deployment
(definitions.py); what `actgeo run` plans (runner.py) and the CLI's partition hints (cli_hints.py). What the
library knows of a stage (its asset name, partitions, upstream, sidecar record and code version) is its
:class:`~actgeo_assets.lib.stages.record.StageSpec`, referenced here, not restated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from actgeo_assets.defs.k8s import step_tags
from actgeo_assets.defs.partitions import SHARD_PAIRS, experiment_partitions
from actgeo_assets.defs.partitions import SHARDS as SHARD_PARTITIONS
from actgeo_assets.lib.config.constants import GPU_POOL, GROUP
from actgeo_assets.lib.stages.activations import CAPTURE, MEAN, NORMALIZE
from actgeo_assets.lib.stages.cards import CARDS
from actgeo_assets.lib.stages.graph import MERGE, TILES
from actgeo_assets.lib.stages.layers import LAYERS
from actgeo_assets.lib.stages.lookup import LOOKUP
from actgeo_assets.lib.stages.record import PAIRS, SHARDS, StageSpec

#: What a stage's steps run on: ``gpu`` (the actgeo_gpu pool; a GPU pod on Kubernetes), ``cpu`` (the run's own
#: process or pod), ``merge`` (a CPU step that holds the whole run: the larger pod on Kubernetes).
GPU, CPU, BIG_CPU = "gpu", "cpu", "merge"
RUNS_ON = (GPU, CPU, BIG_CPU)


@dataclass(frozen=True)
class Stage:
    """One asset of the pipeline and how the platform runs it.

    - ``spec``: the library's stage (asset name, partitions, upstream assets, sidecar, code version);
    - ``job``: the job that runs it (``<feature>_job``: Dagster keeps jobs and assets in one namespace); stages
      that share a job run in it together, in lineage order;
    - ``runs_on``: one of :data:`RUNS_ON`;
    - ``in_run``: `actgeo run` (and so `make demo`) plans it;
    - ``sensor``: the shard sensor requests its stale partitions, stage by stage;
    - ``eager``: declarative automation materializes it once its upstream updates (and the nightly schedule);
    - ``one_run_backfill``: locally, a backfill is one run over all its partitions (one process start, one model
      load); on Kubernetes every partition is its own run, spread over the cluster's pods;
    - ``description``: the asset's description (the UI's asset page).
    """

    spec: StageSpec
    job: str
    description: str
    runs_on: str = CPU
    in_run: bool = True
    sensor: bool = False
    eager: bool = False
    one_run_backfill: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def partitions_def(self) -> dg.DynamicPartitionsDefinition | None:
        """The profile's run's partitions (:meth:`partitions_for` an experiment's)."""
        return self.partitions_for(None)

    def partitions_for(self, experiment: str | None) -> dg.DynamicPartitionsDefinition | None:
        """This stage's partitions in ``experiment`` (None: the profile's run): each experiment has its own."""
        kind = {SHARDS: SHARD_PARTITIONS, PAIRS: SHARD_PAIRS}.get(self.spec.partitions or "")
        return experiment_partitions(kind, experiment) if kind else None


STAGES: tuple[Stage, ...] = (
    Stage(CAPTURE, job="capture_job", runs_on=GPU, sensor=True, one_run_backfill=True,
          description="Residual stream after decoder block `layer` of one dataset shard: float32 .npy, token table "
          "(parquet) and JSON sidecar with sha256. The forward pass stops at the captured layer."),
    Stage(MEAN, job="mean_job", sensor=True,
          description="Mean raw activation over all shards (float64 [d]); `center_l2` subtracts it."),
    Stage(NORMALIZE, job="normalize_job", sensor=True, one_run_backfill=True,
          description="Unit rows (float32) of one shard after `l2`, `center_l2` or `rmsnorm`, with geometry "
          "diagnostics; zero-norm or non-finite rows are excluded and counted. With prune_at, the shard's own "
          "single-linkage forest (read by edge_tiles and components)."),
    Stage(TILES, job="tiles_job", runs_on=GPU, sensor=True, one_run_backfill=True,
          description="Maximum spanning forest of the edges with cosine >= min_threshold between two shards "
          "(tiled GEMM, never the similarity matrix or the edge list): at most n_a + n_b - 1 edges."),
    Stage(MERGE, job="merge_job", runs_on=BIG_CPU, eager=True,
          description="Kruskal merge of all tile forests = the exact single-linkage hierarchy; canonical labels at "
          "the threshold, the study's summary, a fine threshold sweep with the peak of the second-largest "
          "component and the forest edges that carry it, shard-jackknife intervals, the N-scaling curve from the tile forests, the study side by side, and Figure 1."),
    Stage(LAYERS, job="layers_job", runs_on=GPU, in_run=False,
          description="Several layers (compare_layers) of the corpus' first compare_budget tokens, captured in one "
          "forward pass (stopped after the deepest), compared under l2, center_l2 and rmsnorm: mean pairwise "
          "cosine, giant fraction and exact component counts per layer and threshold, and where the reference "
          "layer's top components land in the others. Table, figure and the report's section under "
          "{profile}/layers/ (`actgeo layers`)."),
    Stage(CARDS, job="merge_job", runs_on=BIG_CPU, eager=True,
          description="Cards of representative token contexts (exact token highlighted) for components of the "
          "configured ranks, an offline HTML report (with the layer comparison when `layers` is current), and "
          "rows in the SQL table `actgeo_components`."),
    # the index holds every normalized row (1,000,000 x 2,304 float32: 9 GB in the study): the larger pod
    Stage(LOOKUP, job="lookup_job", runs_on=BIG_CPU, in_run=False,
          description="faiss IndexFlatIP of every normalized row (global row order, as components/labels.npy), "
          "read by `actgeo lookup`: faiss proposes neighbours, float64 decides the component a token joins."),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The stage of asset ``name``; KeyError naming the declared stages."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}: the pipeline declares {list(BY_NAME)}") from None


def ancestors(name: str, stages: tuple[Stage, ...] = STAGES) -> set[str]:
    """Every asset upstream of ``name``, transitively."""
    by_name = {s.name: s for s in stages}
    seen: set[str] = set()
    todo = list(by_name[name].spec.upstream)
    while todo:
        up = todo.pop()
        if up not in seen:
            seen.add(up)
            todo.extend(by_name[up].spec.upstream)
    return seen


def specs_for(names: Iterable[str], stages: tuple[Stage, ...] = STAGES) -> list[StageSpec]:
    """The library specs of ``names`` and of every stage upstream of them, in declaration (lineage) order:
    what the planner needs to judge those stages."""
    wanted = {n for name in names for n in (name, *ancestors(name, stages))}
    return [s.spec for s in stages if s.name in wanted]


def asset_key(name: str, experiment: str | None = None) -> dg.AssetKey:
    """The asset key of stage ``name``: ``name`` for the profile's run, ``experiment/name`` in an experiment
    (``lib/config/experiments.py``): every experiment's assets under its own prefix."""
    return dg.AssetKey([experiment, name] if experiment else [name])


def job_name(job: str, experiment: str | None = None) -> str:
    """The name of the declared ``job`` in ``experiment`` (``<experiment>__<job>``; None: ``job``)."""
    return f"{experiment}__{job}" if experiment else job


def _dep(stage_: Stage, upstream: Stage, experiment: str | None = None) -> dg.AssetDep:
    """The dependency of ``stage_`` on ``upstream``: shard to the same shard; anything else reads every partition
    of a partitioned upstream (a tile reads its two shards, named in its key: Dagster has no pair mapping)."""
    same = stage_.spec.partitions == SHARDS and upstream.spec.partitions == SHARDS
    key = asset_key(upstream.name, experiment)
    if same or upstream.spec.partitions is None:
        return dg.AssetDep(key)
    return dg.AssetDep(key, partition_mapping=dg.AllPartitionMapping())


def automation_condition(stage_: Stage, stages: tuple[Stage, ...] = STAGES,
                         experiment: str | None = None) -> dg.AutomationCondition | None:
    """Eager stages react to their nearest upstream only (an upstream that is also upstream of another of its
    upstreams is ignored: the merge waits for the tiles, not for each shard), never run after a failed blocking
    check upstream, and do not wait for an upstream that `actgeo run` does not plan or that some runs do without
    (the cards do not need the layer comparison, nor the mean of an ``l2`` run)."""
    if not stage_.eager:
        return None
    by_name = {s.name: s for s in stages}
    ups = stage_.spec.upstream
    indirect = [u for u in ups if any(u in ancestors(o, stages) for o in ups if o != u)]
    optional = [u for u in ups if not by_name[u].in_run or by_name[u].spec.optional]
    condition = dg.AutomationCondition.eager()

    def keys(names: list[str]) -> dg.AssetSelection:
        return dg.AssetSelection.assets(*[asset_key(n, experiment) for n in names])

    if indirect:
        condition = condition.ignore(keys(indirect))
    if optional:
        condition = condition.replace(
            "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(keys(optional)))
    return condition & dg.AutomationCondition.all_deps_blocking_checks_passed()


def asset_args(name: str, stages: tuple[Stage, ...] = STAGES, experiment: str | None = None) -> dict[str, Any]:
    """The ``@dg.asset`` arguments of stage ``name``, all derived from its declaration; in ``experiment``
    under its key prefix, in its group, on its own partitions."""
    by_name = {s.name: s for s in stages}
    st = by_name[name]
    return {
        "name": st.name,
        **({"key_prefix": [experiment]} if experiment else {}),
        "partitions_def": st.partitions_for(experiment),
        "deps": [_dep(st, by_name[u], experiment) for u in st.spec.upstream],
        "group_name": experiment or GROUP,
        "code_version": st.spec.version,
        "pool": GPU_POOL if st.runs_on == GPU else None,
        "op_tags": step_tags(st.runs_on),
        "automation_condition": automation_condition(st, stages, experiment),
        "description": (f"Experiment {experiment}. " if experiment else "") + st.description,
    }


def job_names(stages: tuple[Stage, ...] = STAGES) -> list[str]:
    """The jobs, in the order their first stage appears."""
    return list(dict.fromkeys(s.job for s in stages))


def job_stages(job: str, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    return [s for s in stages if s.job == job]


def build_jobs(stages: tuple[Stage, ...] = STAGES, experiment: str | None = None) -> dict[str, Any]:
    """One asset job per declared job name (:func:`job_name` in ``experiment``): its stages' assets, their
    (common) partitions. Executed by the Definitions' executor (in-process locally, dagster-k8s'
    k8s_job_executor on Kubernetes)."""
    jobs = {}
    for job in job_names(stages):
        members = job_stages(job, stages)
        partitions = {id(s.partitions_for(experiment)): s.partitions_for(experiment) for s in members}
        if len(partitions) != 1:
            raise ValueError(f"job {job!r} mixes partitionings: {[s.name for s in members]}")
        name = job_name(job, experiment)
        jobs[name] = dg.define_asset_job(
            name, selection=dg.AssetSelection.assets(*[asset_key(s.name, experiment) for s in members]),
            partitions_def=members[0].partitions_for(experiment),
            description=(f"Experiment {experiment}: " if experiment else "")
            + " Then ".join(f"{s.name}: {s.description.split('. ')[0].rstrip('.')}." for s in members),
        )
    return jobs


JOBS: dict[str, Any] = build_jobs()
_EXPERIMENT_JOBS: dict[str, dict[str, Any]] = {}


def jobs_of(experiment: str | None) -> dict[str, Any]:
    """The declared pipeline's jobs in ``experiment`` (None: :data:`JOBS`), built once per process: the
    Definitions and the experiment's shard sensor must hold the same job objects."""
    if experiment is None:
        return JOBS
    if experiment not in _EXPERIMENT_JOBS:
        _EXPERIMENT_JOBS[experiment] = build_jobs(STAGES, experiment)
    return _EXPERIMENT_JOBS[experiment]


def sensor_stages(stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    return [s for s in stages if s.sensor]


def eager_stages(stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    return [s for s in stages if s.eager]


def run_stages(stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The stages `actgeo run` plans, in lineage order."""
    return [s for s in stages if s.in_run]


def partition_hint(name: str) -> str | None:
    """What asset ``name`` is partitioned by, in words (None: not partitioned)."""
    return {SHARDS: "dataset shard", PAIRS: "pair of shards (i <= j)"}.get(stage(name).spec.partitions or "")
