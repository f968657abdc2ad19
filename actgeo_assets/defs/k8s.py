"""Kubernetes: GPU step tags and the cluster jobs (one per partitions definition), run by the
``k8s_job_executor`` (one pod per step). Locally, ``Definitions(executor=in_process_executor)`` stays the
default for every other job; these jobs only run where the instance has a ``K8sRunLauncher``
(deploy/helm/values.yaml).

Order of the jobs for one run of the study:
``cluster_capture`` (every shard) -> ``cluster_mean`` -> ``cluster_normalize`` (every shard) ->
``cluster_tiles`` (every shard pair) -> ``cluster_merge``. Capture and normalization are separate
jobs because ``center_l2`` (the demo profile's normalization) needs the mean over *all* shards before
any shard can be normalized.

Nothing here touches Kubernetes at import time: dagster-k8s (and the Kubernetes client, ~0.7 s of imports
in every run process) is imported only when :func:`cluster_jobs` builds the jobs, which only the ``k8s``
deployment's Definitions do; the executor reads its config when a run starts.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import dagster as dg

from actgeo_assets.defs.partitions import pair_partitions, shard_partitions
from actgeo_assets.lib.config.constants import GPU_POOL  # noqa: F401 - the pool of GPU_ASSETS, named with them

# GPU nodes: the NVIDIA GPU operator / GPU feature discovery labels them `nvidia.com/gpu.present=true`,
# and managed clusters (GKE, AKS, EKS with the NVIDIA device plugin) taint them `nvidia.com/gpu:NoSchedule`.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR: dict[str, str] = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
]

# One step pod of a GPU-bound asset: one whole GPU (extended resources need requests == limits), host
# memory for the model / two shards, and placement on a GPU node. Keys are the Kubernetes Python client's
# snake_case names, as dagster-k8s expects.
GPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {GPU_RESOURCE: "1", "cpu": "4", "memory": "16Gi"},
            "limits": {GPU_RESOURCE: "1", "memory": "32Gi"},
        },
    },
    "pod_spec_config": {
        "node_selector": GPU_NODE_SELECTOR,
        "tolerations": GPU_TOLERATIONS,
    },
}

# For the asset engineer: `@dg.asset(..., op_tags=GPU_STEP_TAGS)` on raw_activations and edge_tiles.
# The k8s_job_executor reads the `dagster-k8s/config` op tag of each step; other executors ignore it.
GPU_STEP_TAGS: dict[str, Any] = {"dagster-k8s/config": GPU_STEP_K8S_CONFIG}

# The assets whose steps need a GPU (and run in the GPU_POOL pool).
GPU_ASSETS = ("raw_activations", "edge_tiles", "layer_geometry")

# The merge steps (CPU nodes): `components` holds O(N) labels plus every tile forest at once, and
# `component_cards` runs the model's own next-token predictions on the CPU (the full profile's Gemma 2 2B
# in float32 is about 10 GB). Every other step pod gets the run launcher's size (deploy/helm/values.yaml).
MERGE_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "2", "memory": "16Gi"},
            "limits": {"memory": "32Gi"},
        },
    },
}
MERGE_ASSETS = ("components", "component_cards")


def gpu_step_config(*op_names: str) -> dict[str, Any]:
    """Executor run config that pins the given steps to GPU pods (`per_step_k8s_config`).

    It repeats what GPU_STEP_TAGS says on the assets themselves, so the cluster jobs ask for a GPU
    whether or not the op tags are in place; dagster-k8s deep-merges the two (lists de-duplicated).
    """
    return {"per_step_k8s_config": {name: copy.deepcopy(GPU_STEP_K8S_CONFIG) for name in op_names}}


def step_k8s_config(*op_names: str) -> dict[str, Any]:
    """`per_step_k8s_config` of a cluster job: GPU pods for GPU_ASSETS, larger CPU pods for MERGE_ASSETS;
    other steps are absent (they get the run launcher's resources)."""
    config = gpu_step_config(*[n for n in op_names if n in GPU_ASSETS])["per_step_k8s_config"]
    config.update({n: copy.deepcopy(MERGE_STEP_K8S_CONFIG) for n in op_names if n in MERGE_ASSETS})
    return {"per_step_k8s_config": config}


def _job(name: str, selection: list[str], description: str, partitions: Any = None) -> Any:
    from dagster_k8s import k8s_job_executor

    gpu_ops = [a for a in selection if a in GPU_ASSETS]
    sized_ops = [a for a in selection if a in GPU_ASSETS or a in MERGE_ASSETS]
    return dg.define_asset_job(
        name=name,
        selection=dg.AssetSelection.assets(*selection),
        partitions_def=partitions,
        executor_def=k8s_job_executor,
        # Default run config (editable in the launchpad): GPU pods for the GPU-bound steps, larger CPU pods
        # for the merge. Namespace, secrets and the shared data volume come from deploy/helm/values.yaml
        # (actgeo.clusterRunConfig shows a complete run config).
        config={"execution": {"config": step_k8s_config(*sized_ops)}} if sized_ops else None,
        tags={"actgeo/gpu": "true"} if gpu_ops else None,
        description=description,
    )


@functools.cache
def cluster_jobs() -> tuple[Any, ...]:
    """The Kubernetes jobs, in the order of one run of the study (built once)."""
    return (
        _job("cluster_capture", ["raw_activations"],
             "Capture one dataset shard in its own GPU pod (Kubernetes).", shard_partitions),
        _job("cluster_mean", ["activation_mean"],
             "Mean raw activation over all captured shards (CPU pod); needed before center_l2 normalization."),
        _job("cluster_normalize", ["normalized"],
             "Normalize one shard and run its geometry check (CPU pod).", shard_partitions),
        _job("cluster_tiles", ["edge_tiles"],
             "Maximum spanning forest of one shard pair's tile in its own GPU pod (Kubernetes).", pair_partitions),
        _job("cluster_merge", ["components", "component_cards"],
             "Kruskal merge of all tile forests, summary, sweep, figures and cards (CPU pods)."),
    )
