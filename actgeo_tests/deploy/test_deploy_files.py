"""deploy/'s files: the Postgres instance config against a real server, the Helm values as dagster-k8s reads
them, the README's Kubernetes install block run by bash, compose, the Dockerfiles, .dockerignore. No cluster,
no Docker engine and no helm binary are needed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from actgeo_tests.support import helm
from actgeo_tests.support.paths import REPO
from actgeo_tests.support.postgres import postgres_available, running_postgres

DEPLOY = REPO / "deploy"
RELEASE, NAMESPACE = "actgeo", "actgeo"  # `helm upgrade --install actgeo dagster/dagster -n actgeo`
DATA_DIR = "/opt/dagster/app/data"


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
            assert not concurrency.run_queue_config.tag_concurrency_limits  # the GPU pool is the GPU limit

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

            # The materialization reads back through the instance, and the GPU pool has dagster.yaml's
            # default limit, enforced when a run is dequeued (run granularity: no step claims, so no step
            # busy-waits on the pool inside a started run).
            latest = instance.get_latest_materialization_event(dg.AssetKey("deploy_probe"))
            assert latest is not None and latest.run_id == result.run_id
            assert concurrency.pool_config.pool_granularity.value == "run"
            assert concurrency.run_queue_config.should_block_op_concurrency_limited_runs
            pool = instance.event_log_storage.get_concurrency_info("actgeo_gpu")
            assert pool.limit == 1 and pool.using_default_limit
            assert pool.claimed_slots == []
        finally:
            instance.dispose()
            engine.dispose()


def test_deploy_dagster_yaml_is_valid_instance_config():
    """Schema-level check without a server: Dagster's own instance-config validation."""
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(DEPLOY), "dagster.yaml")
    assert set(config["storage"]) == {"postgres"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert "config" not in config["run_coordinator"] or not config["run_coordinator"]["config"]
    # no run-tag limit: no job tags its runs for one (the GPU pool limits the GPU steps)
    assert "tag_concurrency_limits" not in config["concurrency"]["runs"]


def test_instance_monitors_runs():
    assert _yaml("dagster.yaml")["run_monitoring"]["enabled"] is True
    assert _yaml("helm/values.yaml")["dagsterDaemon"]["runMonitoring"]["enabled"] is True


# --------------------------------------------------------------------------------------------------
# 2. Helm values: what every actgeo pod gets, as dagster-k8s reads it
# --------------------------------------------------------------------------------------------------


def test_run_launcher_container_context_gives_the_deployment_env_and_secrets():
    """runLauncher.config.k8sRunLauncher builds a dagster-k8s K8sContainerContext (the context of every run
    pod, and the base of every step pod's): ACTGEO_DEPLOYMENT=k8s, ACTGEO_CONFIG of the mounted ConfigMap,
    the database and HF token Secrets, the data PVC."""
    from dagster_k8s.container_context import K8sContainerContext

    context = K8sContainerContext(**helm.run_launcher_config())
    pod = helm.pod_view(context)
    assert pod["env"]["ACTGEO_DEPLOYMENT"] == "k8s"
    assert pod["env"]["ACTGEO_CONFIG"] == "/etc/actgeo/settings.yaml"
    assert pod["env_secrets"] == ["actgeo-database", "actgeo-hf-token"]
    assert pod["volumes"] == {"actgeo-data": {"persistent_volume_claim": {"claim_name": "actgeo-data"}},
                              "actgeo-settings": {"config_map": {"name": "actgeo-settings"}}}
    assert pod["volume_mounts"] == {"actgeo-data": (DATA_DIR, False), "actgeo-settings": ("/etc/actgeo", True)}
    # ACTGEO_CONFIG names the key of the ConfigMap where it is mounted
    assert pod["env"]["ACTGEO_CONFIG"] == pod["volume_mounts"]["actgeo-settings"][0] + "/settings.yaml"
    security = context.run_k8s_config.pod_spec_config["security_context"]
    assert (security["run_as_non_root"], security["run_as_user"], security["fs_group"]) == (True, 10001, 10001)
    assert context.run_k8s_config.job_spec_config == {"ttl_seconds_after_finished": 86400}


def test_code_server_gets_what_run_and_step_pods_get():
    """includeConfigInLaunchedRuns is off (the code server's size must not reach run pods), so the values
    say the env, secrets and volumes twice: they must agree."""
    from dagster_k8s.container_context import K8sContainerContext

    deployment = helm.user_deployment()
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}
    code = helm.pod_view(K8sContainerContext(**helm.user_deployment_config()))
    runs = helm.pod_view(K8sContainerContext(**helm.run_launcher_config()))
    for key in ("env", "env_secrets", "env_config_maps", "volumes", "volume_mounts"):
        assert code[key] == runs[key], key
    assert helm.user_deployment_env() == helm.run_launcher_env()
    assert code["resources"] != runs["resources"]  # each its own size
    pod = deployment["podSecurityContext"]
    assert (pod["runAsNonRoot"], pod["runAsUser"], pod["fsGroup"]) == (True, 10001, 10001)


def test_step_pods_inherit_the_run_launchers_env_secrets_and_volumes(tmp_path):
    """dagster-k8s 0.29.27: a k8s_job_executor step's context starts from the run launcher's
    (K8sContainerContext.create_for_run, as K8sStepHandler does) and its `dagster-k8s/config` op tag only
    adds to it: a GPU step keeps the env, secrets and volumes and gets its own size."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import get_user_defined_k8s_config

    gpu_tag = {"dagster-k8s/config": json.dumps({
        "container_config": {"resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"node_selector": {"nvidia.com/gpu.present": "true"}},
    })}
    with dg.instance_for_test(overrides={"run_launcher": helm.chart_run_launcher(tmp_path, RELEASE, NAMESPACE)},
                              temp_dir=str(tmp_path)) as instance:
        run = dg.DagsterRun(job_name="probe", run_id="probe-run")
        base = K8sContainerContext.create_for_run(run, instance.run_launcher, include_run_tags=False)
        step = base.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(gpu_tag)))
    launcher, stepped = helm.pod_view(base), helm.pod_view(step)
    assert launcher["env"]["ACTGEO_DEPLOYMENT"] == "k8s" and "actgeo-database" in launcher["env_secrets"]
    for key in ("env", "env_secrets", "volumes", "volume_mounts"):
        assert stepped[key] == launcher[key], key
    assert stepped["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert step.namespace == NAMESPACE
    assert step.run_k8s_config.pod_spec_config["security_context"]["fs_group"] == 10001


def test_helm_values_hold_only_keys_the_chart_reads():
    """Every key of the run launcher is one of the chart's schema (it forbids others); no top-level block
    for something else (the old run config of removed jobs); no run-tag limit that no run carries."""
    values = helm.values()
    launcher = helm.run_launcher_values()
    assert set(launcher) <= helm.CHART_K8S_RUN_LAUNCHER_KEYS, set(launcher) - helm.CHART_K8S_RUN_LAUNCHER_KEYS
    assert set(launcher.get("runK8sConfig", {})) <= {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                                                     "jobSpecConfig", "jobMetadata"}
    chart_top_level = {"global", "generatePostgresqlPasswordSecret", "dagsterWebserver", "dagster-user-deployments",
                       "postgresql", "runLauncher", "dagsterDaemon", "concurrency"}
    assert set(values) <= chart_top_level, set(values) - chart_top_level
    assert "tagConcurrencyLimits" not in values["concurrency"]["runs"]
    assert values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"] == []


def test_helm_values_name_gpu_pool_postgres_and_k8s_launcher():
    values = helm.values()
    text = helm.VALUES_PATH.read_text()
    deployment = helm.user_deployment()
    assert deployment["port"] == 4000
    assert deployment["codeServerArgs"] == ["-m", "actgeo_assets.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is True
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["pools"] == {"defaultLimit": 4, "granularity": "op"}
    # concurrency.runs and the coordinator's own limits exclude each other in Dagster 1.13
    assert values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] is None
    # "actgeo_gpu" is the pool the GPU assets name; the Helm file and the assets must agree
    from actgeo_assets.lib.config.constants import GPU_POOL

    assert GPU_POOL in text


def test_queue_keeps_threaded_dequeue_and_the_rendered_instance_is_valid(tmp_path):
    """The chart's dagster.yaml run_coordinator and concurrency sections (templates/helpers/instance/
    _run-coordinator.tpl and _concurrency.tpl) from the values: Dagster accepts them together, and the
    daemon dequeues with threads."""
    from dagster._core.instance.config import dagster_instance_config

    values = helm.values()
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    concurrency = values["concurrency"]
    # what _run-coordinator.tpl renders with `concurrency.enabled` (falsy values are left out)
    config: dict = {}
    if queued.get("maxConcurrentRuns") is not None:
        config["max_concurrent_runs"] = queued["maxConcurrentRuns"]
    for key, out in [("tagConcurrencyLimits", "tag_concurrency_limits"),
                     ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
                     ("dequeueUseThreads", "dequeue_use_threads"), ("dequeueNumWorkers", "dequeue_num_workers")]:
        if queued.get(key):
            config[out] = queued[key]
    if queued.get("blockOpConcurrencyLimitedRuns"):
        block = queued["blockOpConcurrencyLimitedRuns"]
        config["block_op_concurrency_limited_runs"] = {
            "enabled": block["enabled"], "op_concurrency_slot_buffer": block["opConcurrencySlotBuffer"]}
    assert config == {"dequeue_use_threads": True, "dequeue_num_workers": 4}
    instance_yaml = {
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": config},
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"],
                      "granularity": concurrency["pools"]["granularity"]},
            "runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"]},
        },
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    checked, _ = dagster_instance_config(str(tmp_path), "dagster.yaml")
    assert checked["run_coordinator"]["config"]["dequeue_use_threads"] is True
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(overrides=instance_yaml, temp_dir=str(tmp_path / "home")) as instance:
        coordinator = instance.run_coordinator
        assert coordinator.dequeue_use_threads is True and coordinator.dequeue_num_workers == 4
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 16
        # op granularity: the queue holds back a run whose first steps all wait for a pool slot
        assert queue.should_block_op_concurrency_limited_runs


# --------------------------------------------------------------------------------------------------
# 3. deploy/README.md's Kubernetes install block, run by bash with recording stand-ins
# --------------------------------------------------------------------------------------------------

_STUB = """#!{python}
import json, os, sys
argv = sys.argv[1:]
stdin = sys.stdin.read() if "-" in argv else ""
with open(os.environ["ACTGEO_STUB_LOG"], "a") as log:
    log.write(json.dumps({{"tool": os.path.basename(sys.argv[0]), "argv": argv, "stdin": stdin}}) + "\\n")
"""


def _install_block() -> str:
    text = (DEPLOY / "README.md").read_text()
    return text.split("## 3. Kubernetes", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]


def _run_install(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """The block run by bash from the repository root, with kubectl, helm and docker replaced by stand-ins
    that record their arguments and the manifests piped to them; every other command is the real one."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for tool in ("kubectl", "helm", "docker"):
        (stubs / tool).write_text(_STUB.format(python=sys.executable))
        (stubs / tool).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    (tmp_path / "install.sh").write_text(_install_block())
    base = {k: v for k, v in os.environ.items()
            if k not in ("ACTGEO_DATABASE_URL", "HF_TOKEN", "STORAGE_CLASS", "ACTGEO_IMAGE_REPO")}
    done = subprocess.run(["bash", str(tmp_path / "install.sh")], cwd=REPO, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL,
                          env={**base, **env, "PATH": f"{stubs}:{os.environ['PATH']}", "ACTGEO_STUB_LOG": str(log)})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def _referenced() -> tuple[set[str], set[str], set[str]]:
    """(Secrets, ConfigMaps, PVCs) the values name: every object the install must create first."""
    values = helm.values()
    deployment, launcher = helm.user_deployment(), helm.run_launcher_values()
    secrets = {values["global"]["postgresqlSecretName"], values["postgresql"]["existingSecret"],
               *(s["name"] for s in deployment["envSecrets"] + launcher["envSecrets"])}
    volumes = deployment["volumes"] + launcher["volumes"]
    config_maps = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    return secrets, config_maps, claims


def test_install_block_is_strict_bash():
    block = _install_block()
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[0] == "set -euo pipefail"
    checked = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "<" + "an RWX class" not in block  # no placeholder left to edit by hand


def test_install_block_runs_as_pasted(tmp_path):
    """Every manifest applied parses as YAML after the shell's substitutions; every Secret and the ConfigMap
    the values name exist (random or required values only) before `helm upgrade --install`, which deploys
    the image just built and pushed; the webserver's port-forward comes last."""
    from actgeo_assets.lib.config.sources import read_settings_file

    env = {"ACTGEO_IMAGE_REPO": "registry.test/actgeo", "HF_TOKEN": "hf_test_token", "STORAGE_CLASS": "rwx-test"}
    done, calls = _run_install(tmp_path, env)
    assert done.returncode == 0, done.stderr[-2000:]

    created: dict[tuple[str, str], int] = {}  # (kind, name) -> index of the call that made it
    secrets: dict[str, dict[str, str]] = {}
    manifests: dict[tuple[str, str], dict] = {}
    for i, call in enumerate(calls):
        argv = call["argv"]
        if call["tool"] == "kubectl" and argv[:4] == ["-n", NAMESPACE, "create", "secret"]:
            assert argv[4] == "generic"
            literals = [a.removeprefix("--from-literal=") for a in argv[6:]]
            assert all(a != arg for a, arg in zip(literals, argv[6:], strict=True)), argv  # only literals
            secrets[argv[5]] = dict(item.split("=", 1) for item in literals)
            created[("Secret", argv[5])] = i
        elif call["tool"] == "kubectl" and argv[:4] == ["-n", NAMESPACE, "apply", "-f"]:
            for doc in yaml.safe_load_all(call["stdin"]):
                manifests[(doc["kind"], doc["metadata"]["name"])] = doc
                created[(doc["kind"], doc["metadata"]["name"])] = i
    want_secrets, want_config_maps, want_claims = _referenced()
    assert set(secrets) == want_secrets
    assert {n for k, n in created if k == "ConfigMap"} == want_config_maps == {"actgeo-settings"}
    assert {n for k, n in created if k == "PersistentVolumeClaim"} == want_claims == {"actgeo-data"}

    # values: random passwords, the required token, the database URL on the bundled server with its password
    pg = secrets["actgeo-postgresql"]
    assert set(pg) == {"postgresql-password", "postgresql-postgres-password"}
    assert all(re.fullmatch(r"[0-9a-f]{32}", v) for v in pg.values()) and len(set(pg.values())) == 2
    assert secrets["actgeo-hf-token"] == {"HF_TOKEN": "hf_test_token"}
    (url,) = secrets["actgeo-database"].values()
    assert set(secrets["actgeo-database"]) == {"ACTGEO_DATABASE_URL"}
    parsed = make_url(url)
    assert (parsed.drivername, parsed.host, parsed.username, parsed.database) == \
        ("postgresql+psycopg2", f"{RELEASE}-postgresql", "actgeo", "actgeo")
    assert parsed.password == pg["postgresql-password"]

    # the settings file validates as actgeo settings and puts data_dir on the data volume
    (tmp_path / "settings.yaml").write_text(manifests[("ConfigMap", "actgeo-settings")]["data"]["settings.yaml"])
    settings = read_settings_file(tmp_path / "settings.yaml")
    assert settings["profile"] == "full" and settings["data_dir"] == DATA_DIR
    pvc = manifests[("PersistentVolumeClaim", "actgeo-data")]["spec"]
    assert pvc["storageClassName"] == "rwx-test" and pvc["accessModes"] == ["ReadWriteMany"]

    # the image: built, pushed and deployed under one tag
    docker = [c["argv"] for c in calls if c["tool"] == "docker"]
    assert docker[0][:3] == ["build", "-f", "deploy/Dockerfile.cuda"] and docker[0][3] == "-t"
    image = docker[0][4]
    repo, tag = image.rsplit(":", 1)
    assert repo == "registry.test/actgeo" and re.fullmatch(r"[0-9a-f]{12}-\d{8}T\d{6}Z", tag)
    assert docker[1] == ["push", image]
    (install,) = [i for i, c in enumerate(calls) if c["tool"] == "helm" and c["argv"][:2] == ["upgrade", "--install"]]
    argv = calls[install]["argv"]
    assert argv[2:5] == [RELEASE, "dagster/dagster", "--version"] and "-f" in argv
    assert argv[argv.index("-f") + 1] == "deploy/helm/values.yaml" and argv[argv.index("-n") + 1] == NAMESPACE
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set-string"]
    assert sets == [f"dagster-user-deployments.deployments[0].image.repository={repo}",
                    f"dagster-user-deployments.deployments[0].image.tag={tag}"]
    assert argv[argv.index("--version") + 1] == dg.__version__  # chart version = the image's Dagster
    assert max(created.values()) < install, "every Secret, ConfigMap and PVC before the install"
    assert calls[-1]["tool"] == "kubectl" and calls[-1]["argv"] == [
        "-n", NAMESPACE, "port-forward", f"svc/{RELEASE}-dagster-webserver", "3000:80"]


def test_install_block_uses_a_given_database_and_stops_without_required_variables(tmp_path):
    env = {"ACTGEO_IMAGE_REPO": "registry.test/actgeo", "HF_TOKEN": "hf_test_token", "STORAGE_CLASS": "rwx-test",
           "ACTGEO_DATABASE_URL": "postgresql+psycopg2://u:p@db.example.internal:5432/actgeo"}
    done, calls = _run_install(tmp_path, env)
    assert done.returncode == 0, done.stderr[-2000:]
    (database,) = [c["argv"] for c in calls if "actgeo-database" in c["argv"]]
    assert database[-1] == f"--from-literal=ACTGEO_DATABASE_URL={env['ACTGEO_DATABASE_URL']}"

    for missing in ("ACTGEO_IMAGE_REPO", "HF_TOKEN", "STORAGE_CLASS"):
        done, calls = _run_install(tmp_path, {k: v for k, v in env.items() if k != missing})
        assert done.returncode != 0 and missing in done.stderr, missing
        assert calls == [], missing  # stopped before building, pushing or creating anything


def test_daemon_command_names_the_charts_deployment_and_namespace():
    text = (DEPLOY / "README.md").read_text()
    execs = re.findall(r"kubectl (.*?)exec (deploy/\S+)", text)
    assert execs == [(f"-n {NAMESPACE} ", f"deploy/{RELEASE}-dagster-daemon")]


def test_readme_names_no_removed_job_or_value():
    text = (DEPLOY / "README.md").read_text() + helm.VALUES_PATH.read_text()
    for gone in ("cluster_", "clusterRunConfig", "actgeo-secrets", "actgeo/gpu"):
        assert gone not in text, gone


# --------------------------------------------------------------------------------------------------
# 4. compose, Dockerfiles, workspace, build context, images
# --------------------------------------------------------------------------------------------------


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
    # deploy/.env reaches the runs (HF_TOKEN), and may be absent; compose runs the local Definitions
    assert code["env_file"] == [{"path": ".env", "required": False}]
    assert "ACTGEO_DEPLOYMENT" not in code["environment"]


def test_one_image_tag_per_build():
    """One image for the three actgeo services of compose, tagged by ACTGEO_IMAGE_TAG, the variable the
    Dockerfiles' build lines and the Helm install use too; no `latest`, no fixed version tag."""
    compose = _yaml("docker-compose.yaml")
    images = {services.get("image") for name, services in compose["services"].items() if name != "postgres"}
    assert images == {"actgeo:${ACTGEO_IMAGE_TAG:-local}"}
    assert "build" in compose["services"]["actgeo-code"]
    for name in ("Dockerfile", "Dockerfile.cuda", "docker-compose.yaml", "README.md", "helm/values.yaml"):
        text = (DEPLOY / name).read_text()
        assert "ACTGEO_IMAGE_TAG" in text, name
        assert not re.search(r"actgeo:(latest|\d+\.\d+)", text), name
    assert re.search(r'docker build -f deploy/Dockerfile -t "actgeo:\$ACTGEO_IMAGE_TAG" \.',
                     (DEPLOY / "Dockerfile").read_text())
    assert 'docker build -f deploy/Dockerfile.cuda -t "$ACTGEO_IMAGE_REPO:$ACTGEO_IMAGE_TAG" .' in \
        (DEPLOY / "Dockerfile.cuda").read_text()
    image = helm.user_deployment()["image"]
    assert image["pullPolicy"] == "IfNotPresent"
    assert "ACTGEO_IMAGE_TAG" in image["tag"]  # a placeholder that names what sets it


def test_build_context_and_git_leave_out_venv_data_and_secrets():
    """.dockerignore (build context = the repository root) leaves out what the images never copy; what they
    copy stays in. git ignores deploy/.env (compose's secrets)."""
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for must in (".git", ".venv", "data", ".dagster_home", "test-output", "deploy/.env", ".pytest_cache",
                 ".ruff_cache", ".cache", "**/__pycache__"):
        assert must in patterns, must
    assert not any(p.startswith("!") for p in patterns)
    copied = set()
    for name in ("Dockerfile", "Dockerfile.cuda"):
        for line in re.findall(r"^COPY (.+)$", (DEPLOY / name).read_text(), re.M):
            copied.update(line.split()[:-1])
    assert copied == {"pyproject.toml", "README.md", "actgeo_assets"}
    for path in copied:
        assert not any(fnmatch(path, p) for p in patterns), path
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=REPO, timeout=30)
    assert ignored.returncode == 0, "git does not ignore deploy/.env"


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
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject


def test_workspace_points_at_the_code_server():
    workspace = _yaml("workspace.yaml")
    (entry,) = workspace["load_from"]
    assert entry["grpc_server"] == {"host": "actgeo-code", "port": 4000, "location_name": "actgeo"}
    compose = _yaml("docker-compose.yaml")
    assert "actgeo-code" in compose["services"]


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

    values = helm.values()
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
