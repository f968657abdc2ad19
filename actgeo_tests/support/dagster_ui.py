"""Start what `make ui` starts, for the browser tests: `dagster dev` (webserver + daemon; through
actgeo_assets/dev.py, as the Makefile does) on a free port of
127.0.0.1, with a fresh DAGSTER_HOME holding the Makefile's instance config (dagster.local.yaml), and the
report server (``python -m actgeo_assets.report_server``) on another port; plus GraphQL helpers.

    with dagster_ui(tmp, env) as ui:
        ui.graphql("query { ... }"); ui.url("/assets/components"); ui.report_url
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actgeo_tests.support.paths import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instance_home(path: Path) -> Path:
    """A DAGSTER_HOME configured as the Makefile configures .dagster_home (dagster.local.yaml)."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.local.yaml", path / "dagster.yaml")
    return path


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[:4]} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError:  # it answers
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} not ready in {seconds}s:\n{log.read_text()[-3000:]}")


@dataclass
class DagsterUI:
    port: int
    report_port: int
    home: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def report_url(self) -> str:
        return f"http://127.0.0.1:{self.report_port}"

    def url(self, path: str) -> str:
        return self.base + path

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        req = urllib.request.Request(f"{self.base}/graphql",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
        assert "errors" not in body, body
        return body["data"]

    def run_status(self, run_id: str) -> str:
        data = self.graphql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
        return data["runOrError"]["status"]

    def wait_run(self, run_id: str, seconds: float = 300) -> str:
        deadline = time.time() + seconds
        status = ""
        while time.time() < deadline:
            status = self.run_status(run_id)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(2)
        raise AssertionError(f"run {run_id} still {status} after {seconds}s:\n{self.log.read_text()[-3000:]}")

    def materializations(self, asset: str, limit: int = 20) -> list[dict]:
        data = self.graphql("""query($k: [String!]!, $n: Int) { assetOrError(assetKey: {path: $k}) {
            ... on Asset { assetMaterializations(limit: $n) { runId timestamp partition } } } }""",
                            {"k": [asset], "n": limit})
        return data["assetOrError"]["assetMaterializations"]


@contextlib.contextmanager
def dagster_ui(tmp: Path, env: Mapping[str, str], data_dir: Path) -> Iterator[DagsterUI]:
    """`dagster dev` and the report server (serving ``data_dir``), with ``env`` (DAGSTER_HOME,
    ACTGEO_CONFIG, ACTGEO_REPORT_URL, ...); both are stopped on exit."""
    port, log = free_port(), tmp / "dagster-dev.log"
    report_port = int(env["ACTGEO_REPORT_URL"].rsplit(":", 1)[1])
    procs: list[subprocess.Popen] = []
    try:
        with open(tmp / "report-server.log", "w") as fh:
            procs.append(subprocess.Popen([sys.executable, "-m", "actgeo_assets.report_server", "--port",
                                           str(report_port), "--data-dir", str(data_dir)], cwd=REPO, env=dict(env),
                                          stdout=fh, stderr=subprocess.STDOUT, start_new_session=True))
        with open(log, "w") as fh:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "actgeo_assets.dev", "-m", "actgeo_assets.definitions", "-h", "127.0.0.1",
                 "-p", str(port)], cwd=REPO, env=dict(env), stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True))
        ui = DagsterUI(port=port, report_port=report_port, home=Path(env["DAGSTER_HOME"]), log=log)
        wait_http(f"{ui.base}/server_info", procs[1], log)
        wait_http(ui.report_url + "/", procs[0], tmp / "report-server.log", seconds=60)
        yield ui
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def skip_community_dialog(page: Any) -> None:
    """Dismiss the UI's first-visit dialog when it shows (not in every build)."""
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Skip").click(timeout=10_000)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for the block (the in-process runner reads them), then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
