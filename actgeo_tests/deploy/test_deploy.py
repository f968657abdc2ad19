"""deploy/: the Postgres instance config against a real server, the Kubernetes jobs' executor config,
and the Helm / compose / Docker / workspace files. No cluster and no Docker engine are needed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from actgeo_tests.support.postgres import postgres_available, running_postgres

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CLUSTER_JOB_NAMES = ["cluster_capture", "cluster_mean", "cluster_normalize", "cluster_tiles", "cluster_merge"]


def _yaml(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


# --------------------------------------------------------------------------------------------------
# 1. deploy/dagster.yaml against a real PostgreSQL server
# --------------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_deploy_instance_stores_runs_and_events_in_postgres(tmp_path, monkeypatch):
    assert postgres_available(), (
        "PostgreSQL server binaries (initdb, pg_ctl) not found: `make test` installs Debian's postgresql"
    )
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    with running_postgres() as url:
        u = make_url(url)
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_PG_HOST", u.host)
        monkeypatch.setenv("DAGSTER_PG_PORT", str(u.port))
        monkeypatch.setenv("DAGSTER_PG_USER", u.username)
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused-trust-auth")
        monkeypatch.setenv("DAGSTER_PG_DB", u.database)

        instance = dg.DagsterInstance.get()
        engine = sa.create_engine(url)
        try:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
            assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
            assert isinstance(instance.run_launcher, DefaultRunLauncher)

            concurrency = instance.get_concurrency_config()
            assert concurrency.pool_config.default_pool_limit == 1
            assert concurrency.run_queue_config.max_concurrent_runs == 4
            assert {"key": "actgeo/gpu", "value": "true", "limit": 2} in (
                concurrency.run_queue_config.tag_concurrency_limits
            )

            @dg.asset(pool="actgeo_gpu")
            def deploy_probe() -> dg.MaterializeResult:
                return dg.MaterializeResult(metadata={"answer": 42})

            result = dg.materialize([deploy_probe], instance=instance)
            assert result.success

            with engine.connect() as conn:
                runs = conn.execute(sa.text("SELECT run_id, status FROM runs")).all()
                assert (result.run_id, "SUCCESS") in [tuple(r) for r in runs]
                events = dict(conn.execute(
                    sa.text("SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = :r "
                            "GROUP BY dagster_event_type"), {"r": result.run_id},
                ).all())
            assert events.get("ASSET_MATERIALIZATION") == 1
            assert events.get("PIPELINE_SUCCESS") == 1

            # The materialization reads back through the instance, and the GPU pool took the default
            # limit from dagster.yaml when the step claimed its slot.
            latest = instance.get_latest_materialization_event(dg.AssetKey("deploy_probe"))
            assert latest is not None and latest.run_id == result.run_id
            pool = instance.event_log_storage.get_concurrency_info("actgeo_gpu")
            assert pool.slot_count == 1 and pool.using_default_limit
            assert pool.claimed_slots == []
        finally:
            instance.dispose()
            engine.dispose()


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


def test_cluster_jobs_use_the_k8s_executor(defs):
    from actgeo_assets.defs.k8s import CLUSTER_JOBS

    assert sorted(j.name for j in CLUSTER_JOBS) == sorted(CLUSTER_JOB_NAMES)
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
# 3. Helm values, compose, Dockerfiles, workspace
# --------------------------------------------------------------------------------------------------


def test_helm_values_name_gpu_pool_postgres_and_k8s_launcher():
    values = _yaml("helm/values.yaml")
    text = (DEPLOY / "helm/values.yaml").read_text()
    assert "nvidia.com/gpu" in text
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["port"] == 4000
    assert deployment["codeServerArgs"] == ["-m", "actgeo_assets.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is True
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["pools"]["defaultLimit"] >= 1
    assert {"key": "actgeo/gpu", "value": "true", "limit": 8} in values["concurrency"]["runs"]["tagConcurrencyLimits"]
    # concurrency.runs and the coordinator's own limits exclude each other in Dagster 1.13
    assert values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] is None
    # "actgeo_gpu" is the pool the GPU assets name; the Helm file and the assets must agree
    assert "actgeo_gpu" in text
    # run pods and step pods see the shared data volume where ActgeoResource.data_dir points
    mounts = values["runLauncher"]["config"]["k8sRunLauncher"]["volumeMounts"]
    assert {"name": "actgeo-data", "mountPath": "/opt/dagster/app/data"} in mounts
    data_dir = values["actgeo"]["clusterRunConfig"]["resources"]["actgeo"]["config"]["data_dir"]
    assert data_dir == "/opt/dagster/app/data"


def test_gpu_assets_are_in_the_pool_the_deploy_limits():
    from actgeo_assets.definitions import ASSETS
    from actgeo_assets.defs.k8s import GPU_ASSETS, GPU_POOL

    pools = {a.key.to_user_string(): a.op.pool for a in ASSETS}
    assert {k for k, p in pools.items() if p == GPU_POOL} == set(GPU_ASSETS)


def test_compose_has_the_four_services():
    compose = _yaml("docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", "actgeo-code", "webserver", "daemon"}
    code = services["actgeo-code"]
    assert code["command"][:3] == ["dagster", "code-server", "start"]
    assert "4000" in code["command"]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    for name in ("actgeo-code", "webserver", "daemon"):
        env = services[name]["environment"]
        assert {"DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
                "DAGSTER_PG_PORT"} <= set(env), name
        assert env["DAGSTER_PG_HOST"] == "postgres"
    assert any(v.startswith("actgeo-data:") for v in code["volumes"])


def test_dockerfiles_pin_torch_and_start_the_code_server():
    cmd = '["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "actgeo_assets.definitions"]'
    cpu = (DEPLOY / "Dockerfile").read_text()
    assert cpu.startswith("#") and re.search(r"^FROM python:3\.11-slim$", cpu, re.M)
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "pip install '.[cpu]'" in cpu
    assert f"CMD {cmd}" in cpu

    cuda = (DEPLOY / "Dockerfile.cuda").read_text()
    assert re.search(r"nvidia/cuda:12\.\d+(\.\d+)?-runtime", cuda)
    assert re.search(r"ARG TORCH_CUDA=cu12\d", cuda)
    assert 'pip install torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"' in cuda
    assert "pip install '.[gpu]'" in cuda  # the gpu extra: faiss-gpu-cu12 instead of faiss-cpu
    assert f"CMD {cmd}" in cuda

    # The pins agree with pyproject.toml.
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject


def test_workspace_points_at_the_code_server():
    workspace = _yaml("workspace.yaml")
    (entry,) = workspace["load_from"]
    assert entry["grpc_server"] == {"host": "actgeo-code", "port": 4000, "location_name": "actgeo"}
    compose = _yaml("docker-compose.yaml")
    assert "actgeo-code" in compose["services"]


def test_deploy_dagster_yaml_is_valid_instance_config():
    """Schema-level check without a server: Dagster's own instance-config validation."""
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(DEPLOY), "dagster.yaml")
    assert set(config["storage"]) == {"postgres"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert "config" not in config["run_coordinator"] or not config["run_coordinator"]["config"]


# --------------------------------------------------------------------------------------------------
# 4. No default password, no root, runs killed mid-way are failed by the daemon
# --------------------------------------------------------------------------------------------------


def test_no_default_password_anywhere():
    """Compose refuses to start without ACTGEO_PG_PASSWORD (``${VAR:?message}``: an error, not a fallback);
    the Helm values read an existing Secret and carry no password."""
    text = (DEPLOY / "docker-compose.yaml").read_text()
    compose = _yaml("docker-compose.yaml")
    passwords = [compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]]
    passwords += [compose["services"][name]["environment"]["DAGSTER_PG_PASSWORD"]
                  for name in ("actgeo-code", "webserver", "daemon")]
    for value in passwords:
        assert re.fullmatch(r"\$\{ACTGEO_PG_PASSWORD:\?[^}]+\}", value), value
    assert not re.search(r"\$\{[A-Z_]*PASSWORD[A-Z_]*:?-", text)  # no ${...:-default} for a password

    values = _yaml("helm/values.yaml")
    assert values["generatePostgresqlPasswordSecret"] is False  # the chart reads, never generates, a Secret
    secret = values["global"]["postgresqlSecretName"]
    assert secret and values["postgresql"]["existingSecret"] == secret  # the bundled server reads it too
    assert values["postgresql"]["postgresqlPassword"] == ""  # the chart's default password is not used
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            body = path.read_text().lower()
            for weak in ("change-me", "changeme", ":-actgeo}", "password: actgeo", "postgresqlpassword: test"):
                assert weak not in body, (path, weak)


def test_images_run_as_a_non_root_user():
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DEPLOY / name).read_text()
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert users, name
        uid = users[-1].split(":")[0]
        assert uid not in ("root", "0"), name
        # the last USER comes after every RUN (nothing installs as that user) and before the CMD
        last_user = text.rindex("\nUSER ")
        assert text.rindex("\nRUN ") < last_user < text.rindex("\nCMD "), name
        assert re.search(r"useradd .*--uid 10001", text) and "chown -R actgeo:actgeo /opt/dagster/app/data" in text
    (deployment,) = _yaml("helm/values.yaml")["dagster-user-deployments"]["deployments"]
    pod = deployment["podSecurityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001 and pod["fsGroup"] == 10001


def test_instance_monitors_runs():
    assert _yaml("dagster.yaml")["run_monitoring"]["enabled"] is True
    assert _yaml("helm/values.yaml")["dagsterDaemon"]["runMonitoring"]["enabled"] is True
