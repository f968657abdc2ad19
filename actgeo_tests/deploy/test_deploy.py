"""Kubernetes: what every launcher starts and the pod each step gets, from the Definitions loaded as on
Kubernetes and deploy/helm/values.yaml resolved by dagster-k8s itself. No cluster is needed. deploy/'s files
themselves (instance, values, install block, compose, images): test_deploy_files.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml

from actgeo_assets.defs.pipeline import BIG_CPU, GPU, JOBS, STAGES, eager_stages
from actgeo_tests.support.paths import REPO
from actgeo_tests.support.tiny_run import tiny_values

DEPLOY = REPO / "deploy"
#: The pod kind of each stage's step, from the declaration (deploy/README.md's table names the same kinds).
POD_KIND = {s.name: {GPU: "GPU step pod", BIG_CPU: "merge step pod"}.get(s.runs_on, "CPU step pod") for s in STAGES}


def _yaml(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.fixture(scope="module")
def defs():
    """The Definitions as the Kubernetes deployment loads them (ACTGEO_DEPLOYMENT=k8s, helm/values.yaml)."""
    from actgeo_assets.definitions import build_defs

    return build_defs("k8s")


def _all_jobs(definitions: dg.Definitions) -> dict[str, dg.JobDefinition]:
    return {j.name: j for j in definitions.get_repository_def().get_all_jobs()}


def test_local_definitions_run_in_process():
    from actgeo_assets.definitions import build_defs, defs

    for local in (defs, build_defs(None), build_defs("local")):
        jobs = _all_jobs(local)
        assert set(JOBS) <= set(jobs)
        assert {j.executor_def.name for j in jobs.values()} == {"in_process"}
    with pytest.raises(ValueError, match=r"ACTGEO_DEPLOYMENT is 'kube'; expected one of local, k8s"):
        build_defs("kube")


def test_every_job_on_kubernetes_runs_its_steps_in_pods(defs):
    """The declared jobs, the implicit asset job (UI launches, backfills, declarative automation) and the
    schedule's job: every one of them has dagster-k8s' executor, and the same job names as locally."""
    jobs = _all_jobs(defs)
    assert set(JOBS) <= set(jobs) and "__ASSET_JOB" in jobs
    assert {name: j.executor_def.name for name, j in jobs.items()} == dict.fromkeys(jobs, "k8s")


def test_k8s_deployment_loads_from_the_pods_environment(tmp_path):
    """What the code server and every run pod of the Helm chart load: the variable set in helm/values.yaml."""
    import subprocess
    import sys

    values = _yaml("helm/values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert {"name": "ACTGEO_DEPLOYMENT", "value": "k8s"} in deployment["env"]
    assert "ACTGEO_DEPLOYMENT=k8s" in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]
    code = ("from actgeo_assets.definitions import defs\n"
            "print(sorted({j.executor_def.name for j in defs.get_repository_def().get_all_jobs()}))")
    env = {**os.environ, "ACTGEO_DEPLOYMENT": "k8s", "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=DEPLOY.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['k8s']"
    # compose runs everything in its code server (DefaultRunLauncher): the local deployment
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
    assert "capture_job" in out[1]


def test_what_each_launcher_starts_on_kubernetes(defs, tmp_path: Path) -> None:
    """The shard sensor (evaluated on a fresh data directory), the automation sensor, the schedule and a UI
    backfill: which job each starts, with which executor and default run config (a launcher adds none)."""
    from actgeo_assets.defs.resources import ActgeoResource

    resource = ActgeoResource(data_dir=str(tmp_path / "data"), **tiny_values(model="unused-model"))
    sensor = defs.resolve_sensor_def("shard_sensor")
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"actgeo": resource},
                                      sensor_name="shard_sensor", definitions=defs)
    result = sensor(context)
    started = {r.job_name for r in result.run_requests}
    assert started == {"capture_job"}, started  # nothing captured yet: the first stage, one run per shard
    assert all(not r.run_config for r in result.run_requests)  # the job's defaults: the pods get the settings
    assert {j.name for j in sensor.targets and [defs.resolve_job_def(t.job_name) for t in sensor.targets]} == {
        s.job for s in STAGES if s.sensor}
    for target in sensor.targets:
        assert defs.resolve_job_def(target.job_name).executor_def.name == "k8s", target.job_name
    # declarative automation and a UI backfill launch (subsets of) the implicit asset job
    automation = defs.resolve_sensor_def("default_automation_condition_sensor")
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    assets = {k.to_user_string(): defs.resolve_assets_def(k) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {k for k, a in assets.items() if a.automation_conditions_by_key.get(dg.AssetKey(k))} == {
        s.name for s in eager_stages()} | {"experiment_comparison"}
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "k8s"
    for name, a in assets.items():  # each partition of a backfill is its own run on Kubernetes
        assert a.backfill_policy is None, name
    schedule = defs.resolve_schedule_def("actgeo_nightly")
    assert defs.resolve_job_def(schedule.job_name).executor_def.name == "k8s"


def test_what_an_experiments_sensor_starts_on_kubernetes(tmp_path: Path) -> None:
    """An experiment (a settings file in the data directory) has its own shard sensor on Kubernetes: it registers
    the experiment's own partitions and starts the experiment's own capture job, in pods sized by the
    declaration, like the profile's run."""
    from actgeo_assets.definitions import build_defs
    from actgeo_assets.defs.resources import ActgeoResource
    from actgeo_assets.lib.config.experiments import write_experiment
    from actgeo_assets.lib.config.sources import resolve_settings

    data = tmp_path / "data"
    values = tiny_values(model="unused-model")
    write_experiment(data, "exp_a", resolve_settings([("test", {**values, "layer": 1})]))
    defs = build_defs("k8s", experiments=["exp_a"])
    sensor = defs.resolve_sensor_def("exp_a__shard_sensor")
    # the deployment's settings come from its settings file ($ACTGEO_CONFIG; helm/values.yaml), which the
    # experiment's file is laid over
    config = tmp_path / "actgeo.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data), **values}))
    resource = ActgeoResource(config_file=str(config))
    result = sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"actgeo": resource},
                                            sensor_name=sensor.name, definitions=defs))
    assert {r.job_name for r in result.run_requests} == {"exp_a__capture_job"}
    assert {r.partition_key for r in result.run_requests} == {"shard-000", "shard-001"}
    added = {req.partitions_def_name for req in result.dynamic_partitions_requests}
    assert added == {"exp_a__actgeo_shards", "exp_a__actgeo_shard_pairs"}
    job = defs.resolve_job_def("exp_a__capture_job")
    assert job.executor_def.name == "k8s"
    node = job.graph.node_dict["exp_a__raw_activations"]
    assert node.definition.tags == defs.resolve_job_def("capture_job").graph.node_dict["raw_activations"].definition.tags


def test_backfills_are_one_run_per_stage_locally_and_per_partition_on_kubernetes() -> None:
    """Locally a backfill runs each stage declared one_run_backfill as one run (one process, one model load);
    on Kubernetes each partition stays its own run, so a backfill spreads the shards and tiles over pods."""
    from actgeo_assets.definitions import build_defs

    local, k8s = build_defs("local"), build_defs("k8s")
    one_run = {s.name for s in STAGES if s.one_run_backfill}
    assert one_run == {"raw_activations", "normalized", "edge_tiles"}
    for s in STAGES:
        expected = dg.BackfillPolicy.single_run() if s.name in one_run else None
        assert local.resolve_assets_def(s.name).backfill_policy == expected, s.name
        assert k8s.resolve_assets_def(s.name).backfill_policy is None, s.name


def test_gpu_stages_are_in_the_pool_the_deploy_limits():
    from actgeo_assets.definitions import pipeline_assets
    from actgeo_assets.lib.config.constants import GPU_POOL

    pools = {a.key.to_user_string(): a.op.pool for a in pipeline_assets()}
    assert {k for k, p in pools.items() if p == GPU_POOL} == {s.name for s in STAGES if s.runs_on == GPU}
    assert {s.name for s in STAGES if s.runs_on == GPU} == {"raw_activations", "edge_tiles", "layers"}


# --------------------------------------------------------------------------------------------------
# What each pod gets: helm/values.yaml as the chart renders it, resolved by dagster-k8s itself
# --------------------------------------------------------------------------------------------------

RELEASE, NAMESPACE = "actgeo", "actgeo"  # `helm upgrade --install actgeo dagster/dagster -n actgeo`
IMAGE = "registry.example.com/actgeo:0.1.0-cu128"


def _readme_pod_table() -> dict[str, tuple[dict, dict, set[str]]]:
    """deploy/README.md's table of pod sizes ("What each pod gets"): pod kind -> (requests, limits, the steps
    it names)."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("### What each pod gets", 1)[1].split("\n### ", 1)[0]
    table = section.split("| pod | steps |", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in table.splitlines()[2:] if line.startswith("| ")]

    def quantities(cell: str) -> dict:
        return dict(item.split(": ") for item in cell.split(", "))

    return {row[0]: (quantities(row[2]), quantities(row[3]), set(re.findall(r"`(\w+)`", row[1]))) for row in rows}


def _readme_pod_sizes() -> dict[str, tuple[dict, dict]]:
    return {kind: (req, lim) for kind, (req, lim, _) in _readme_pod_table().items()}


def _resources(job) -> tuple[dict, dict]:
    (container,) = job.spec.template.spec.containers
    return dict(container.resources.requests or {}), dict(container.resources.limits or {})


@pytest.fixture(scope="module")
def chart_pods(defs, tmp_path_factory):
    """Every kind of pod of every job (the declared ones and the implicit asset job of UI launches, backfills and
    automation), with the default run config every launcher uses, built by dagster-k8s from the values as the
    chart renders them: the run pod by K8sRunLauncher.launch_run (the Job it would create), each step pod by the
    k8s_job_executor's step handler (launcher settings, then executor config, then the step's
    `dagster-k8s/config` op tag) and construct_dagster_k8s_job, as K8sStepHandler.launch_step does."""
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

    from actgeo_tests.support.helm import chart_run_launcher

    values = _yaml("helm/values.yaml")
    tmp = tmp_path_factory.mktemp("chart")
    run_config: dict = {}  # what the sensors, the schedule, automation and backfills launch with
    # the code server hands no container context to runs (includeConfigInLaunchedRuns off): the launcher's count
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}
    container_context = None
    pods: dict = {}
    with dg.instance_for_test(overrides={"run_launcher": chart_run_launcher(tmp, RELEASE, NAMESPACE)},
                              temp_dir=str(tmp)) as instance:
        launcher = instance.run_launcher
        for job_name in [*JOBS, "__ASSET_JOB"]:
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
    kinds = POD_KIND
    named = {kind: steps for kind, (_, _, steps) in _readme_pod_table().items()}
    for name, kind in POD_KIND.items():  # the README names each stage's step under the pod it gets
        assert name in named[kind], (name, kind, named)
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
        # the deployment's settings file (its profile) and its database reach every pod, not only the code server
        assert env["ACTGEO_CONFIG"] == "/etc/actgeo/settings.yaml", name
        assert [s.secret_ref.name for s in container.env_from if s.secret_ref] == ["actgeo-database",
                                                                                  "actgeo-hf-token"], name
        assert [(m.mount_path, m.read_only) for m in container.volume_mounts if m.name == "actgeo-settings"] == [
            ("/etc/actgeo", True)], name
        assert [v.config_map.name for v in pod.volumes if v.name == "actgeo-settings"] == ["actgeo-settings"], name
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
        gpu = what == "step" and POD_KIND.get(name.split(".")[0]) == "GPU step pod"
        assert (pod.node_selector == {"nvidia.com/gpu.present": "true"}) is gpu, name
        assert bool(pod.tolerations) is gpu, name
