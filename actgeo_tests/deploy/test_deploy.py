"""Kubernetes: the jobs' executor config and every pod dagster-k8s builds from deploy/helm/values.yaml. No
cluster is needed. deploy/'s files themselves (instance, values, install block, compose, images):
test_deploy_files.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CLUSTER_JOB_NAMES = ["cluster_capture", "cluster_mean", "cluster_normalize", "cluster_tiles", "cluster_merge"]


def _yaml(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


# --------------------------------------------------------------------------------------------------
# 2. Kubernetes jobs: definitions load, executor config validates, GPU step pods are built
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defs():
    """The Definitions as the Kubernetes deployment loads them (ACTGEO_DEPLOYMENT=k8s, helm/values.yaml)."""
    from actgeo_assets.definitions import build_defs

    return build_defs("k8s")


def test_local_definitions_hold_no_cluster_job():
    from actgeo_assets.definitions import build_defs, defs

    for local in (defs, build_defs(None), build_defs("local")):
        jobs = {j.name: j for j in local.get_repository_def().get_all_jobs()}
        assert not [n for n in jobs if n.startswith("cluster_")]
        assert {j.executor_def.name for j in jobs.values()} == {"in_process"}
    with pytest.raises(ValueError, match=r"ACTGEO_DEPLOYMENT is 'kube'; expected one of local, k8s"):
        build_defs("kube")


def test_k8s_deployment_loads_the_cluster_jobs_from_its_environment(tmp_path):
    """What the code server and the run pods of the Helm chart load: the variable set in helm/values.yaml."""
    import os
    import subprocess
    import sys

    values = _yaml("helm/values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert {"name": "ACTGEO_DEPLOYMENT", "value": "k8s"} in deployment["env"]
    assert "ACTGEO_DEPLOYMENT=k8s" in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]
    code = ("from actgeo_assets.definitions import defs\n"
            "print(sorted(j.name + ':' + j.executor_def.name for j in defs.get_repository_def().get_all_jobs()\n"
            "             if j.name.startswith('cluster_')))")
    env = {**os.environ, "ACTGEO_DEPLOYMENT": "k8s", "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=DEPLOY.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(sorted(f"{n}:k8s" for n in CLUSTER_JOB_NAMES))
    # compose runs everything in its code server (DefaultRunLauncher): no cluster jobs there
    compose = _yaml("docker-compose.yaml")
    assert "ACTGEO_DEPLOYMENT" not in compose["services"]["actgeo-code"].get("environment", {})


def test_local_definitions_do_not_import_dagster_k8s() -> None:
    """Every run process imports the Definitions: locally, without dagster-k8s and the Kubernetes client."""
    import subprocess
    import sys

    code = ("import sys, actgeo_assets.definitions as d; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster_k8s', 'kubernetes'))); "
            "print(sorted(j.name for j in d.defs.jobs))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ACTGEO_DEPLOYMENT": "local"}).stdout.splitlines()
    assert out[0] == "[]", out[0]
    assert "cluster_capture" not in out[1] and "stage_capture" in out[1]


def test_cluster_jobs_use_the_k8s_executor(defs):
    from actgeo_assets.defs.k8s import cluster_jobs

    assert sorted(j.name for j in cluster_jobs()) == sorted(CLUSTER_JOB_NAMES)
    expect = {
        "cluster_capture": ({"raw_activations"}, "actgeo_shards"),
        "cluster_mean": ({"activation_mean"}, None),
        "cluster_normalize": ({"normalized"}, "actgeo_shards"),
        "cluster_tiles": ({"edge_tiles"}, "actgeo_shard_pairs"),
        "cluster_merge": ({"components", "component_cards"}, None),
    }
    for name, (assets, partitions) in expect.items():
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == "k8s", name
        keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
        assert keys == assets, name
        assert (job.partitions_def.name if job.partitions_def else None) == partitions, name
    # Everything else stays in-process locally.
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_deploy_run_config_validates_against_every_cluster_job(defs):
    from actgeo_assets.defs.k8s import GPU_STEP_K8S_CONFIG

    run_config = _yaml("helm/values.yaml")["actgeo"]["clusterRunConfig"]
    for name in CLUSTER_JOB_NAMES:
        resolved = dg.validate_run_config(defs.resolve_job_def(name), run_config)
        k8s = resolved["execution"]["k8s"]
        assert k8s["job_namespace"] == "actgeo"
        for op in ("raw_activations", "edge_tiles"):
            step = k8s["per_step_k8s_config"][op]
            assert step["container_config"] == GPU_STEP_K8S_CONFIG["container_config"], op
            assert step["pod_spec_config"] == GPU_STEP_K8S_CONFIG["pod_spec_config"], op
        assert resolved["resources"]["actgeo"]["config"]["profile"] == "full"

    # The schema is the k8s executor's: a misspelt key is refused.
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(defs.resolve_job_def("cluster_tiles"),
                               {"execution": {"config": {"job_namespce": "actgeo"}}})


def test_gpu_jobs_default_to_gpu_step_pods(defs):
    from actgeo_assets.defs.k8s import GPU_STEP_K8S_CONFIG

    for name, op in [("cluster_capture", "raw_activations"), ("cluster_tiles", "edge_tiles")]:
        job = defs.resolve_job_def(name)
        assert job.tags.get("actgeo/gpu") == "true"
        default = job.partitioned_config.get_run_config_for_partition_key("shard-000")
        assert default["execution"]["config"]["per_step_k8s_config"] == {op: GPU_STEP_K8S_CONFIG}
        dg.validate_run_config(job, default)
    for name in ["cluster_mean", "cluster_normalize", "cluster_merge"]:
        assert "actgeo/gpu" not in defs.resolve_job_def(name).tags


def test_gpu_step_tags_build_a_gpu_pod():
    """GPU_STEP_TAGS as op tags (what the asset engineer adds) plus the per-step config: the step Job that
    dagster-k8s builds requests one GPU and lands on a GPU node."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    from actgeo_assets.defs.k8s import GPU_STEP_K8S_CONFIG, GPU_STEP_TAGS, gpu_step_config

    @dg.asset(op_tags=GPU_STEP_TAGS)
    def gpu_probe() -> None: ...

    step_tags = gpu_probe.op.tags  # what the executor sees as the step's tags: JSON strings
    from_tags = get_user_defined_k8s_config({k: v if isinstance(v, str) else json.dumps(v)
                                             for k, v in step_tags.items()})
    per_step = UserDefinedDagsterK8sConfig.from_dict(
        gpu_step_config("gpu_probe")["per_step_k8s_config"]["gpu_probe"])
    merged = K8sContainerContext(run_k8s_config=from_tags).merge(K8sContainerContext(run_k8s_config=per_step))
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="actgeo:test", dagster_home="/opt/dagster/dagster_home"),
        ["dagster", "api", "execute_step"], "dagster-step-probe", user_defined_k8s_config=merged.run_k8s_config,
    )
    pod = job.spec.template.spec
    resources = pod.containers[0].resources
    assert resources.limits["nvidia.com/gpu"] == "1" and resources.requests["nvidia.com/gpu"] == "1"
    assert pod.node_selector == GPU_STEP_K8S_CONFIG["pod_spec_config"]["node_selector"]
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]


# --------------------------------------------------------------------------------------------------
# 2b. What each pod gets: helm/values.yaml as the chart renders it, resolved by dagster-k8s itself
# --------------------------------------------------------------------------------------------------

RELEASE, NAMESPACE = "actgeo", "actgeo"  # `helm upgrade --install actgeo dagster/dagster -n actgeo`
IMAGE = "registry.example.com/actgeo:0.1.0-cu128"
# A kubeconfig that is never contacted: K8sRunLauncher and the step handler load one when they are built.
_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def _names(refs) -> list[str]:
    return [r["name"] for r in refs or [] if "name" in r]


def _chart_run_launcher(values: dict, kubeconfig: Path) -> dict:
    """The instance's `run_launcher` as the chart renders it (dagster chart 1.13,
    templates/helpers/instance/_run-launcher.tpl, `dagsterYaml.runLauncher.k8s`), with a kubeconfig in
    place of the in-cluster config."""
    v = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict = {
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "job_namespace": v.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": v["imagePullPolicy"],
        "service_account_name": f"{RELEASE}-dagster",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{RELEASE}-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if v.get("envConfigMaps"):
        config["env_config_maps"] = _names(v["envConfigMaps"])
    if v.get("envSecrets"):
        config["env_secrets"] = _names(v["envSecrets"])
    for key, out in [("envVars", "env_vars"), ("volumeMounts", "volume_mounts"), ("volumes", "volumes"),
                     ("labels", "labels"), ("resources", "resources"), ("schedulerName", "scheduler_name"),
                     ("securityContext", "security_context")]:
        if v.get(key):
            config[out] = v[key]
    if v.get("runK8sConfig"):
        run_k8s = v["runK8sConfig"]
        config["run_k8s_config"] = {
            out: run_k8s[key] for key, out in [
                ("containerConfig", "container_config"), ("podSpecConfig", "pod_spec_config"),
                ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
                ("jobSpecConfig", "job_spec_config"), ("jobMetadata", "job_metadata"),
            ] if run_k8s.get(key)
        }
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _chart_container_context(values: dict) -> dict | None:
    """The container context the code server reports with every run: what the user-deployments chart
    passes in DAGSTER_CONTAINER_CONTEXT (`dagsterUserDeployments.k8sContainerContext`) when
    includeConfigInLaunchedRuns is on (the chart's default when the key is absent), else none."""
    (d,) = values["dagster-user-deployments"]["deployments"]
    if not (d.get("includeConfigInLaunchedRuns") or {"enabled": True})["enabled"]:
        return None
    k8s: dict = {
        "image_pull_policy": d["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{d['name']}-user-env",
                            *_names(d.get("envConfigMaps"))],
        "namespace": NAMESPACE,
        "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
    }
    if d.get("envSecrets"):
        k8s["env_secrets"] = _names(d["envSecrets"])
    for key, out in [("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("labels", "labels"),
                     ("resources", "resources"), ("schedulerName", "scheduler_name")]:
        if d.get(key):
            k8s[out] = d[key]
    if isinstance(d.get("env"), list):
        k8s["env"] = d["env"]
    return {"k8s": k8s}


def _readme_pod_sizes() -> dict[str, tuple[dict, dict]]:
    """deploy/README.md's table "What each pod gets": pod kind -> (requests, limits)."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("### What each pod gets", 1)[1].split("\n### ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("| pod ")]

    def quantities(cell: str) -> dict:
        return dict(item.split(": ") for item in cell.split(", "))

    return {row[0]: (quantities(row[2]), quantities(row[3])) for row in rows}


def _resources(job) -> tuple[dict, dict]:
    (container,) = job.spec.template.spec.containers
    return dict(container.resources.requests or {}), dict(container.resources.limits or {})


@pytest.fixture(scope="module")
def chart_pods(defs, tmp_path_factory):
    """Every kind of pod of a cluster run, built by dagster-k8s from the values as the chart renders them:
    the run pod by K8sRunLauncher.launch_run (the Job it would create), each step pod by the k8s_job_executor's
    step handler (launcher settings, then executor config, then the step's `dagster-k8s/config` op tag, then
    `per_step_k8s_config`) and construct_dagster_k8s_job, as K8sStepHandler.launch_step does."""
    from types import SimpleNamespace
    from unittest import mock

    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.job import construct_dagster_k8s_job

    values = _yaml("helm/values.yaml")
    tmp = tmp_path_factory.mktemp("chart")
    (tmp / "kubeconfig").write_text(_KUBECONFIG)
    run_config = values["actgeo"]["clusterRunConfig"]
    container_context = _chart_container_context(values)
    pods: dict = {}
    with dg.instance_for_test(overrides={"run_launcher": _chart_run_launcher(values, tmp / "kubeconfig")},
                              temp_dir=str(tmp)) as instance:
        launcher = instance.run_launcher
        for job_name in CLUSTER_JOB_NAMES:
            job = defs.resolve_job_def(job_name)
            origin = JobPythonOrigin(job_name, RepositoryPythonOrigin(
                executable_path="/usr/local/bin/python",
                code_pointer=ModuleCodePointer("actgeo_assets.definitions", "defs", working_directory=None),
                container_image=IMAGE, container_context=container_context,
            ))
            run = instance.add_run(dg.DagsterRun(job_name=job_name, run_id=f"run-{job_name.replace('_', '-')}",
                                                 run_config=run_config, tags=dict(job.tags),
                                                 job_code_origin=origin))
            with mock.patch.object(launcher._api_client, "create_namespaced_job_with_retries") as create:
                launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
            pods[("run", job_name)] = (create.call_args.kwargs["body"], create.call_args.kwargs["namespace"])

            executor_config = dg.validate_run_config(job, run_config)["execution"]["k8s"]
            executor = k8s_job_executor.executor_creation_fn(
                InitExecutorContext(job=InMemoryJob(job), executor_def=k8s_job_executor, executor_config=executor_config,
                                    instance=instance))
            handler = executor._step_handler
            plan = create_execution_plan(job, run_config=run_config)
            for step in plan.steps:
                step_args = ExecuteStepArgs(job_origin=origin, run_id=run.run_id,
                                            step_keys_to_execute=[step.key], instance_ref=None)
                context = SimpleNamespace(
                    execute_step_args=step_args, dagster_run=run, instance=instance,
                    step_tags={step.key: {k: v if isinstance(v, str) else json.dumps(v)
                                          for k, v in step.tags.items()}},
                    get_step_context=lambda _key, op=step.node_handle.name: SimpleNamespace(
                        step=SimpleNamespace(op_name=op)),
                )
                resolved = handler._get_container_context(context)
                job_config = resolved.get_k8s_job_config(None, launcher).with_image(IMAGE)
                pods[("step", step.key)] = (construct_dagster_k8s_job(
                    job_config=job_config, args=step_args.get_command_args(skip_serialized_namedtuple=True),
                    job_name=f"dagster-step-{step.key}", component="step_worker",
                    user_defined_k8s_config=resolved.run_k8s_config,
                ), resolved.namespace)
    return values, pods


def test_every_pod_gets_the_size_deploy_readme_states(chart_pods):
    values, pods = chart_pods
    stated = _readme_pod_sizes()
    assert set(stated) == {"run pod", "CPU step pod", "GPU step pod", "merge step pod", "code server"}
    kinds = {"raw_activations": "GPU step pod", "edge_tiles": "GPU step pod",
             "components": "merge step pod", "component_cards": "merge step pod",
             "activation_mean": "CPU step pod", "normalized": "CPU step pod"}
    seen = set()
    for (what, name), (job, _) in pods.items():
        if what == "run":
            kind = "run pod"
        else:
            op = name.split(".")[0]
            kind = kinds.get(op, "CPU step pod")  # asset checks run in a step of their own too
            seen.add(op)
        assert _resources(job) == stated[kind], (what, name)
    assert set(kinds) <= seen
    # the numbers themselves, so that a change of the README alone cannot pass
    assert stated["run pod"] == ({"cpu": "500m", "memory": "2Gi"}, {"memory": "8Gi"})
    assert stated["CPU step pod"] == stated["run pod"]
    assert stated["GPU step pod"] == ({"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"},
                                      {"nvidia.com/gpu": "1", "memory": "32Gi"})
    assert stated["merge step pod"] == ({"cpu": "2", "memory": "16Gi"}, {"memory": "32Gi"})
    # the code server's own size (chart: the container's `resources`), and only its own
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    code = deployment["resources"]
    assert ({k: str(v) for k, v in code["requests"].items()}, {k: str(v) for k, v in code["limits"].items()}) \
        == stated["code server"]
    assert _chart_container_context(values) is None, "includeConfigInLaunchedRuns hands the code server's size"


def test_jobs_default_step_sizes_match_the_deploy_run_config(defs):
    """Backfills and the sensor launch with the jobs' default run config, not actgeo.clusterRunConfig: both
    size the same steps the same way."""
    stated = _yaml("helm/values.yaml")["actgeo"]["clusterRunConfig"]["execution"]["config"]["per_step_k8s_config"]
    for name in CLUSTER_JOB_NAMES:
        job = defs.resolve_job_def(name)
        default = (job.partitioned_config.get_run_config_for_partition_key("shard-000")
                   if job.partitioned_config else job.run_config) or {}
        per_step = default.get("execution", {}).get("config", {}).get("per_step_k8s_config", {})
        ops = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
        assert per_step == {op: config for op, config in stated.items() if op in ops}, name


def test_run_and_step_pods_get_env_secrets_volume_and_user(chart_pods):
    values, pods = chart_pods
    for (what, name), (job, namespace) in pods.items():
        assert namespace == NAMESPACE, name
        pod = job.spec.template.spec
        # the chart's own service account, allowed to create the step Jobs
        assert pod.service_account_name == f"{RELEASE}-dagster", name
        (container,) = pod.containers
        env = {e.name: e.value for e in container.env}
        assert env["ACTGEO_DEPLOYMENT"] == "k8s" and env["HF_HOME"] == "/opt/dagster/app/data/hf-cache", name
        assert [s.secret_ref.name for s in container.env_from if s.secret_ref] == ["actgeo-secrets"], name
        assert env.get("DAGSTER_PG_PASSWORD") is None  # from the Secret, never a value
        pg = next(e for e in container.env if e.name == "DAGSTER_PG_PASSWORD")
        assert pg.value_from.secret_key_ref.name == values["global"]["postgresqlSecretName"], name
        assert [(m.name, m.mount_path) for m in container.volume_mounts
                if m.name == "actgeo-data"] == [("actgeo-data", "/opt/dagster/app/data")], name
        assert [v.persistent_volume_claim.claim_name for v in pod.volumes
                if v.name == "actgeo-data"] == ["actgeo-data"], name
        security = pod.security_context
        assert (security.run_as_non_root, security.run_as_user, security.fs_group) == (True, 10001, 10001), name
        assert job.spec.ttl_seconds_after_finished == 86400, name
        gpu = what == "step" and name.split(".")[0] in ("raw_activations", "edge_tiles")
        assert (pod.node_selector == {"nvidia.com/gpu.present": "true"}) is gpu, name
        assert bool(pod.tolerations) is gpu, name


# --------------------------------------------------------------------------------------------------
# 3. Helm values, compose, Dockerfiles, workspace
# --------------------------------------------------------------------------------------------------


def test_gpu_assets_are_in_the_pool_the_deploy_limits():
    from actgeo_assets.definitions import ASSETS
    from actgeo_assets.defs.k8s import GPU_ASSETS, GPU_POOL

    pools = {a.key.to_user_string(): a.op.pool for a in ASSETS}
    assert {k for k, p in pools.items() if p == GPU_POOL} == set(GPU_ASSETS)


# --------------------------------------------------------------------------------------------------
# 4. No default password, no root, runs killed mid-way are failed by the daemon
# --------------------------------------------------------------------------------------------------


def test_backfills_are_one_run_per_stage_locally_and_per_partition_on_kubernetes(monkeypatch) -> None:
    """Locally a backfill runs each partitioned stage as one run (one process, one model load); on Kubernetes
    each partition stays its own run, so a backfill spreads the shards and tiles over pods."""
    from actgeo_assets.definitions import SINGLE_RUN_BACKFILL, build_defs

    local, k8s = build_defs("local"), build_defs("k8s")
    for key in SINGLE_RUN_BACKFILL:
        assert local.resolve_assets_def(key).backfill_policy == dg.BackfillPolicy.single_run(), key
        assert k8s.resolve_assets_def(key).backfill_policy is None, key
    assert set(SINGLE_RUN_BACKFILL) == {"raw_activations", "normalized", "edge_tiles"}
