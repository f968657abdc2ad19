"""Kubernetes: the pod each step gets, by what its stage runs on (``runs_on`` in defs/pipeline.py).

On the ``k8s`` deployment the Definitions' executor is dagster-k8s' ``k8s_job_executor`` (one pod per step), so
every run (the sensors', the schedule's, automation's, a UI backfill's or launch) runs each step in its own pod.
A step's pod is the run launcher's container context (image, env, secrets, the data volume, the settings file:
deploy/helm/values.yaml) merged with the ``dagster-k8s/config`` op tag of its asset, which dagster-k8s
deep-merges on top: GPU steps get one whole GPU on a GPU node, the merge steps a larger CPU pod, other steps the
run launcher's size. Executors other than dagster-k8s' ignore the tag, so it is set on every deployment.

Nothing here imports dagster-k8s: definitions.py imports it only for the ``k8s`` deployment.
"""

from __future__ import annotations

import copy
from typing import Any

# GPU nodes: the NVIDIA GPU operator / GPU feature discovery labels them `nvidia.com/gpu.present=true`,
# and managed clusters (GKE, AKS, EKS with the NVIDIA device plugin) taint them `nvidia.com/gpu:NoSchedule`.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR: dict[str, str] = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
]

#: The pod of a GPU step: one whole GPU (extended resources need requests == limits), host memory for the model
#: or two shards, and placement on a GPU node. Keys are the Kubernetes Python client's snake_case names, as
#: dagster-k8s expects.
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

#: The pod of a merge step (CPU node): `components` holds O(N) labels plus every tile forest at once, and
#: `component_cards` runs the model's own next-token predictions on the CPU (the full profile's Gemma 2 2B in
#: float32 is about 10 GB).
MERGE_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "2", "memory": "16Gi"},
            "limits": {"memory": "32Gi"},
        },
    },
}

#: The op tag dagster-k8s reads for a step's pod.
K8S_CONFIG_TAG = "dagster-k8s/config"


def step_tags(runs_on: str) -> dict[str, Any] | None:
    """The op tags of a step that runs on ``runs_on`` (``gpu``, ``cpu`` or ``merge``): its pod's config, or None
    for a step that takes the run launcher's pod size."""
    config = {"gpu": GPU_STEP_K8S_CONFIG, "merge": MERGE_STEP_K8S_CONFIG, "cpu": None}[runs_on]
    return {K8S_CONFIG_TAG: copy.deepcopy(config)} if config else None
