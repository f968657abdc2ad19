"""The compose topology without containers (issue 14, item 7): PostgreSQL, the gRPC code server, the daemon
and the webserver as four separate processes on 127.0.0.1, with deploy/dagster.yaml as the instance (its
storage, QueuedRunCoordinator, DefaultRunLauncher and `concurrency:` limits, rendered through the same
DAGSTER_PG_* variables compose sets) and deploy/workspace.yaml's grpc_server entry pointed at the code
server's port. A run submitted through dagster_graphql's client is queued, launched by the daemon into its
own process (a child of the code server) and succeeds; the declarative automation sensor ticks in that
daemon. Each process start and the queue-to-success time are printed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from sqlalchemy.engine import make_url

from actgeo_tests.support.dagster_ui import free_port, wait_http
from actgeo_tests.support.paths import REPO
from actgeo_tests.support.postgres import postgres_available, running_postgres
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values

BIN = Path(sys.executable).parent
LOCATION = "actgeo"  # deploy/workspace.yaml's location_name
pytestmark = pytest.mark.postgres


def _wait(what: str, check: Callable[[], Any], seconds: float, logs: list[Path], every: float = 0.5) -> Any:
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in logs if p.exists())
    raise AssertionError(f"{what}: not within {seconds}s\n{tails}")


@contextlib.contextmanager
def _processes() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start processes in their own sessions; on exit SIGTERM then SIGKILL each process group (a run's
    process, spawned by the code server, is in the code server's group)."""
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _plain(log: Path) -> str:
    """A log's text without ANSI colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))


def _workspace(port: int) -> dict:
    """deploy/workspace.yaml with the code server's host and port replaced."""
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    assert entry["grpc_server"]["location_name"] == LOCATION
    entry["grpc_server"].update(host="127.0.0.1", port=port)
    return workspace


def test_queued_run_launched_by_daemon_in_its_own_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert postgres_available(), "PostgreSQL not found: `make test` installs Debian's postgresql"
    from dagster_graphql import DagsterGraphQLClient

    home = tmp_path / "home"
    home.mkdir()
    deploy_yaml = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    # the launcher is chosen by the deploy file itself: one process per run, no Docker or Kubernetes
    assert deploy_yaml["run_launcher"]["class"] == "DefaultRunLauncher"
    assert deploy_yaml["run_coordinator"]["class"] == "QueuedRunCoordinator"
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    settings = {"data_dir": str(tmp_path / "data"), **tiny_values(model=tiny_gemma2(tmp_path))}
    (tmp_path / "actgeo.yaml").write_text(yaml.safe_dump(settings))
    grpc_port, web_port = free_port(), free_port()
    (home / "workspace.yaml").write_text(yaml.safe_dump(_workspace(grpc_port)))
    logs = {name: tmp_path / f"{name}.log" for name in ("code-server", "webserver", "daemon")}
    times: dict[str, float] = {}

    with running_postgres() as url, _processes() as start:
        u = make_url(url)
        env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": str(u.host),
               "DAGSTER_PG_PORT": str(u.port), "DAGSTER_PG_USER": str(u.username),
               "DAGSTER_PG_PASSWORD": "trust", "DAGSTER_PG_DB": str(u.database),
               "ACTGEO_CONFIG": str(tmp_path / "actgeo.yaml"), "ACTGEO_DATABASE_URL": url,
               "PYTHONUNBUFFERED": "1"}
        env.pop("ACTGEO_DEPLOYMENT", None)
        for key in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                    "DAGSTER_PG_DB"):  # this process opens the same instance to read runs, events and ticks
            monkeypatch.setenv(key, env[key])
        workspace = str(home / "workspace.yaml")

        t0 = time.time()
        code = start([str(BIN / "dagster"), "code-server", "start", "-m", "actgeo_assets.definitions",
                      "-h", "127.0.0.1", "-p", str(grpc_port)], logs["code-server"], env)
        from dagster._grpc.client import DagsterGrpcClient
        from dagster._grpc.types import ListRepositoriesResponse
        from dagster._serdes import deserialize_value

        def serving() -> bool:
            if code.poll() is not None:
                raise AssertionError(f"code server exited:\n{logs['code-server'].read_text()[-3000:]}")
            try:
                reply = deserialize_value(DagsterGrpcClient(port=grpc_port, host="127.0.0.1").list_repositories())
            except Exception:
                return False
            return isinstance(reply, ListRepositoriesResponse)

        _wait("code server serving the definitions", serving, 180, list(logs.values()), every=1)
        times["code server up"] = time.time() - t0

        t0 = time.time()
        web = start([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", workspace],
                    logs["webserver"], env)
        wait_http(f"http://127.0.0.1:{web_port}/server_info", web, logs["webserver"], seconds=120)
        times["webserver up"] = time.time() - t0
        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port, timeout=60)

        sensors = {}
        for name in ("shard_sensor", "default_automation_condition_sensor"):
            data = client._execute("""query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
                __typename ... on Sensor { jobOriginId sensorState { selectorId status } } } }""",
                                   {"s": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                                          "sensorName": name}})["sensorOrError"]
            assert data["__typename"] == "Sensor", data
            assert data["sensorState"]["status"] == "RUNNING", (name, data)  # both on by default
            sensors[name] = (data["jobOriginId"], data["sensorState"]["selectorId"])
        # The shard sensor would request the stale capture runs of both shards itself; stopped before the
        # daemon starts, so the one run in the queue is the one this test submits.
        stopped = client._execute("""mutation($o: String!, $s: String!) { stopSensor(jobOriginId: $o,
            jobSelectorId: $s) { __typename ... on StopSensorMutationResult { instigationState { status } } } }""",
                                  {"o": sensors["shard_sensor"][0], "s": sensors["shard_sensor"][1]})
        assert stopped["stopSensor"]["instigationState"]["status"] == "STOPPED", stopped

        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
            instance.add_dynamic_partitions("actgeo_shards", ["shard-000", "shard-001"])

            # queued with no daemon yet: nothing dequeues it
            submitted = time.time()
            run_id = client.submit_job_execution("capture_job", repository_location_name=LOCATION,
                                                 tags={"dagster/partition": "shard-000"})
            assert client.get_run_status(run_id) == dg.DagsterRunStatus.QUEUED

            t0 = time.time()
            daemon = start([str(BIN / "dagster-daemon"), "run", "-w", workspace], logs["daemon"], env)
            seen: list[str] = []

            def finished() -> str | None:
                for proc, name in ((code, "code server"), (web, "webserver"), (daemon, "daemon")):
                    assert proc.poll() is None, f"{name} exited"
                status = client.get_run_status(run_id).value
                if not seen or seen[-1] != status:
                    seen.append(status)
                return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

            final = _wait(f"run {run_id} finished", finished, 150, list(logs.values()), every=0.5)
            times["daemon start -> run success"] = time.time() - t0
            times["submit -> run success"] = time.time() - submitted
            record = instance.get_run_record_by_id(run_id)
            assert record is not None
            times["run start -> success (run process)"] = (record.end_time or 0) - (record.start_time or 0)
            assert final == "SUCCESS", (seen, [e.message for e in instance.all_logs(run_id)][-20:])
            assert seen[0] == "QUEUED" and seen[-1] == "SUCCESS", seen

            events = instance.all_logs(run_id)
            kinds = [e.dagster_event.event_type_value for e in events if e.dagster_event]
            order = [kinds.index(k) for k in ("PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START",
                                              "PIPELINE_SUCCESS")]
            assert order == sorted(order), kinds
            assert "ASSET_MATERIALIZATION" in kinds
            pids = [int(e.dagster_event.engine_event_data.metadata["pid"].value) for e in events
                    if e.dagster_event and e.message.startswith("Started process for run (pid:")]
            assert len(pids) == 1, [e.message for e in events]
            # the run's own process: not the daemon, the webserver, the code server's proxy, nor this test
            assert pids[0] not in {os.getpid(), code.pid, web.pid, daemon.pid}
            # ... spawned by the code server (its output lands in the code server's stdout), launched by the
            # daemon's queue
            assert f"{run_id} - {pids[0]} - RUN_START" in logs["code-server"].read_text(errors="replace")
            assert run_id not in logs["webserver"].read_text(errors="replace") + logs["daemon"].read_text()
            assert "QueuedRunCoordinatorDaemon - INFO - Launched 1 runs" in _plain(logs["daemon"])
            assert instance.get_latest_materialization_event(dg.AssetKey("raw_activations")) is not None
            partitions = instance.get_materialized_partitions(dg.AssetKey("raw_activations"))
            assert partitions == {"shard-000"}

            # the automation sensor ticks in this daemon (its first tick follows the daemon's start)
            origin_id, selector_id = sensors["default_automation_condition_sensor"]
            ticks = _wait("automation sensor ticks", lambda: instance.get_ticks(origin_id, selector_id, after=t0),
                          90, list(logs.values()), every=1)
            times["daemon start -> first automation tick"] = min(t.timestamp for t in ticks) - t0
            assert all(t.status.value in ("SUCCESS", "SKIPPED", "STARTED") for t in ticks), ticks
            assert "for default_automation_condition_sensor in actgeo" in _plain(logs["daemon"])
            assert not instance.get_ticks(*sensors["shard_sensor"], after=t0)  # stopped: no ticks
            # it evaluated the graph and requested nothing: the merge's inputs (edge_tiles) are missing
            assert instance.get_runs_count(dg.RunsFilter()) == 1

    for step, seconds in times.items():
        print(f"{step}: {seconds:.1f} s")
