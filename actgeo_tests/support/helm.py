"""deploy/helm/values.yaml as dagster-k8s sees it, for tests: no cluster and no helm binary needed.

The dagster chart (1.13) renders ``runLauncher.config.k8sRunLauncher`` into the instance's ``run_launcher``
(templates/helpers/instance/_run-launcher.tpl); dagster-k8s then gives every run pod, and every step pod of
the ``k8s_job_executor``, that launcher's env, secrets, volumes, resources and ``runK8sConfig``
(``K8sContainerContext.create_for_run``). The code server (the user deployment) gets its own ``env``,
``envSecrets``, ``volumes`` and ``volumeMounts``. The functions below return both in the keyword arguments
of ``dagster_k8s.container_context.K8sContainerContext``, so a test can build the contexts and compare them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

VALUES_PATH = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "values.yaml"

#: Keys of ``runLauncher.config.k8sRunLauncher`` in the chart's values schema (schema/charts/dagster/subschema/
#: run_launcher.py, ``K8sRunLauncherConfig``, extra keys forbidden).
CHART_K8S_RUN_LAUNCHER_KEYS = frozenset({
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
    "schedulerName", "securityContext", "runK8sConfig",
})
#: Keys of ``runK8sConfig`` in the same schema (``RunK8sConfig``) -> dagster-k8s's ``run_k8s_config`` keys.
_RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}
#: chart key -> K8sContainerContext keyword, for the values copied as they are.
_LAUNCHER_KEYS = {
    "imagePullPolicy": "image_pull_policy", "envVars": "env_vars", "volumes": "volumes",
    "volumeMounts": "volume_mounts", "labels": "labels", "resources": "resources",
    "schedulerName": "scheduler_name", "securityContext": "security_context", "jobNamespace": "namespace",
}
_DEPLOYMENT_KEYS = {
    "volumes": "volumes", "volumeMounts": "volume_mounts", "labels": "labels", "resources": "resources",
    "schedulerName": "scheduler_name",
}


@cache
def _values_text() -> str:
    return VALUES_PATH.read_text()


def values() -> dict[str, Any]:
    """deploy/helm/values.yaml, parsed (YAML anchors resolved; a fresh copy on every call)."""
    return yaml.safe_load(_values_text())


def _names(refs: list[dict[str, str]] | None) -> list[str]:
    """``[{name: x}, ...]`` (the chart's ConfigMapEnvSource / SecretEnvSource lists) -> ``[x, ...]``."""
    return [r["name"] for r in refs or [] if r.get("name")]


def run_launcher_values() -> dict[str, Any]:
    """``runLauncher.config.k8sRunLauncher`` as written in the values (the chart's camelCase keys)."""
    return values()["runLauncher"]["config"]["k8sRunLauncher"]


def run_launcher_config() -> dict[str, Any]:
    """Keyword arguments of ``K8sContainerContext`` for what the run launcher gives run and step pods:
    env_vars (``NAME=value`` strings), env_secrets / env_config_maps (names), volumes, volume_mounts,
    resources, image_pull_policy, namespace (when set), and run_k8s_config (a ``UserDefinedDagsterK8sConfig``).
    ``loadInclusterConfig`` / ``kubeconfigFile`` configure the launcher's client, not a pod: left out."""
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    v = run_launcher_values()
    out: dict[str, Any] = {kw: v[key] for key, kw in _LAUNCHER_KEYS.items() if v.get(key)}
    if v.get("envSecrets"):
        out["env_secrets"] = _names(v["envSecrets"])
    if v.get("envConfigMaps"):
        out["env_config_maps"] = _names(v["envConfigMaps"])
    if v.get("runK8sConfig"):
        run_k8s = {kw: v["runK8sConfig"][key] for key, kw in _RUN_K8S_CONFIG_KEYS.items()
                   if v["runK8sConfig"].get(key)}
        out["run_k8s_config"] = UserDefinedDagsterK8sConfig.from_dict(run_k8s)
    return out


def user_deployment() -> dict[str, Any]:
    """The one user deployment (the actgeo code server) of ``dagster-user-deployments``."""
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    return deployment


def user_deployment_config() -> dict[str, Any]:
    """Keyword arguments of ``K8sContainerContext`` for the code server's pod: env (``[{name, value}]``,
    the Kubernetes EnvVar list of the values), env_secrets / env_config_maps (names), volumes,
    volume_mounts, resources."""
    d = user_deployment()
    out: dict[str, Any] = {kw: d[key] for key, kw in _DEPLOYMENT_KEYS.items() if d.get(key)}
    env = d.get("env") or []
    out["env"] = ([{"name": k, "value": str(v)} for k, v in env.items()] if isinstance(env, dict) else list(env))
    if d.get("envSecrets"):
        out["env_secrets"] = _names(d["envSecrets"])
    if d.get("envConfigMaps"):
        out["env_config_maps"] = _names(d["envConfigMaps"])
    return out


def user_deployment_env() -> dict[str, str]:
    """The code server's literal environment variables, name -> value (``env`` entries with a ``value``;
    variables from Secrets are in :func:`user_deployment_config`'s ``env_secrets``)."""
    return {e["name"]: str(e["value"]) for e in user_deployment_config()["env"] if "value" in e}


def run_launcher_env() -> dict[str, str]:
    """The run launcher's ``envVars`` (``NAME=value``), name -> value: what every run and step pod gets."""
    return dict(item.split("=", 1) for item in run_launcher_config().get("env_vars", []))


def pod_view(context: Any) -> dict[str, Any]:
    """What a built ``K8sContainerContext`` puts in a pod (dagster-k8s folds every keyword into its
    ``run_k8s_config``): ``env`` (name -> literal value), ``env_secrets`` and ``env_config_maps`` (names, from
    ``env_from``), ``volumes`` (name -> the volume's source, snake_case), ``volume_mounts`` (name ->
    (mount path, read-only)) and ``resources``."""
    container = context.run_k8s_config.container_config
    pod = context.run_k8s_config.pod_spec_config
    env_from = container.get("env_from") or []
    return {
        "env": {e["name"]: str(e["value"]) for e in container.get("env") or [] if e.get("value") is not None},
        "env_secrets": [s["secret_ref"]["name"] for s in env_from if s.get("secret_ref")],
        "env_config_maps": [s["config_map_ref"]["name"] for s in env_from if s.get("config_map_ref")],
        "volumes": {v["name"]: {k: s for k, s in v.items() if k != "name"} for v in pod.get("volumes") or []},
        "volume_mounts": {m["name"]: (m["mount_path"], bool(m.get("read_only"))) for m in
                          container.get("volume_mounts") or []},
        "resources": container.get("resources") or {},
    }


#: A kubeconfig that is never contacted: K8sRunLauncher loads one when it is built.
_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def chart_run_launcher(tmp_dir: Path, release: str, namespace: str) -> dict[str, Any]:
    """The instance's ``run_launcher`` block as the chart renders it from the values (``dagsterYaml.runLauncher.
    k8s``), for ``dg.instance_for_test(overrides={"run_launcher": ...})``: a kubeconfig written under
    ``tmp_dir`` stands in for the in-cluster config, the chart's names follow ``release`` / ``namespace``."""
    kubeconfig = Path(tmp_dir) / "kubeconfig"
    kubeconfig.write_text(_KUBECONFIG)
    v = run_launcher_values()
    context = run_launcher_config()
    config: dict[str, Any] = {
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "job_namespace": v.get("jobNamespace") or namespace,
        "image_pull_policy": v["imagePullPolicy"],
        "service_account_name": f"{release}-dagster",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{release}-dagster-instance",
        "postgres_password_secret": values()["global"]["postgresqlSecretName"],
    }
    for key in ("env_config_maps", "env_secrets", "env_vars", "volume_mounts", "volumes", "labels", "resources",
                "scheduler_name", "security_context"):
        if context.get(key):
            config[key] = context[key]
    if v.get("runK8sConfig"):
        config["run_k8s_config"] = {kw: v["runK8sConfig"][key] for key, kw in _RUN_K8S_CONFIG_KEYS.items()
                                    if v["runK8sConfig"].get(key)}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}
