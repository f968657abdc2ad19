"""The Dagster UI as a person uses it: `dagster dev` (webserver + daemon) on 127.0.0.1, headless chromium
materializes `components` from its asset page, the run succeeds (GraphQL), and the asset page shows the
summary table and the figure. Screenshots land in test-output/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.tiny_model import tiny_gemma2

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "actgeo_tests" / "fixtures" / "mini_corpus.jsonl"
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} not ready in {seconds}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "dagster_home"
    home.mkdir()
    config = {
        "profile": "demo", "data_dir": str(tmp / "data"), "model": tiny_gemma2(tmp / "model"), "layer": 2,
        "corpus": str(FIXTURE), "n_shards": 2, "budget": 400, "context_len": 32, "batch_size": 4,
        "threshold": 0.6, "min_threshold": 0.4, "card_ranks": [2, 4], "contexts_per_card": 2,
    }
    cfg = tmp / "actgeo.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "DAGSTER_HOME": str(home), "ACTGEO_CONFIG": str(cfg), "PYTHONUNBUFFERED": "1"}
    # Upstream partitions first (as `make demo` would), recorded in the same instance the UI reads.
    old = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "ACTGEO_CONFIG")}
    os.environ.update({"DAGSTER_HOME": str(home), "ACTGEO_CONFIG": str(cfg)})
    try:
        with dg.DagsterInstance.get() as instance:
            materialize_run(ActgeoResource(), instance, echo=lambda s: None)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    port = _free_port()
    log = tmp / "dagster-dev.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-m", "actgeo_assets.definitions", "-h", "127.0.0.1",
             "-p", str(port)], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", proc, log)
        yield port, home
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    assert "errors" not in body, body
    return body["data"]


def _components_runs(port: int) -> list[dict]:
    data = _graphql(port, """query { assetOrError(assetKey: {path: ["components"]}) {
        ... on Asset { assetMaterializations(limit: 5) { runId timestamp } } } }""")
    return data["assetOrError"]["assetMaterializations"]


def _run_status(port: int, run_id: str) -> str:
    from dagster_graphql import DagsterGraphQLClient

    return DagsterGraphQLClient("127.0.0.1", port_number=port).get_run_status(run_id).value


def test_materialize_components_from_the_asset_page(dagster_ui) -> None:
    port, _ = dagster_ui
    TEST_OUTPUT.mkdir(exist_ok=True)
    before = {m["runId"] for m in _components_runs(port)}
    base = f"http://127.0.0.1:{port}"
    with chromium_context(viewport=(1400, 1000), timeout_ms=60_000) as ctx:
        page = ctx.new_page()
        page.goto(f"{base}/assets/components")
        skip = page.get_by_role("button", name="Skip")
        try:
            skip.click(timeout=15_000)
        except Exception:  # the community dialog does not show in every build
            pass
        try:
            page.locator("button", has_text="Materialize").first.click()
        except Exception:
            page.screenshot(path=str(TEST_OUTPUT / "ui-no-materialize-button.png"), full_page=True)
            raise
        # Wait for a new materialization of `components` to land, launched from the page.
        deadline, new = time.time() + 300, []
        while time.time() < deadline:
            new = [m for m in _components_runs(port) if m["runId"] not in before]
            if new:
                break
            time.sleep(2)
        assert new, "no run materialized `components` after clicking Materialize"
        assert _run_status(port, new[0]["runId"]) == "SUCCESS"
        page.screenshot(path=str(TEST_OUTPUT / "ui-after-materialize.png"), full_page=True)
        # The asset page shows the run's metadata: the summary table and Figure 1 (markdown values open
        # in a dialog from the metadata table).
        page.goto(f"{base}/assets/components")
        row = page.locator("tr", has_text="figure_size_spectrum").first
        row.wait_for(timeout=60_000)
        row.scroll_into_view_if_needed()
        try:
            row.locator("button, a", has_text="Markdown").first.click()
            img = page.locator("img[src^='data:image/png']").first
            img.wait_for(timeout=60_000)
        except Exception:
            page.screenshot(path=str(TEST_OUTPUT / "ui-no-figure.png"), full_page=True)
            (TEST_OUTPUT / "ui-no-figure.html").write_text(row.inner_html())
            raise
        assert page.evaluate("Array.from(document.images).some(i => i.src.startsWith('data:image/png') "
                             "&& i.naturalWidth > 100)")
        page.wait_for_timeout(1500)  # let the dialog finish fading in before the screenshot
        shot = TEST_OUTPUT / "ui-components-metadata.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000


def test_lineage_shows_the_assets_in_order(dagster_ui) -> None:
    port, _ = dagster_ui
    TEST_OUTPUT.mkdir(exist_ok=True)
    with chromium_context(viewport=(1600, 1000), timeout_ms=60_000) as ctx:
        page = ctx.new_page()
        page.goto(f"http://127.0.0.1:{port}/asset-groups")
        try:
            page.get_by_role("button", name="Skip").click(timeout=10_000)
        except Exception:  # the community dialog does not show in every build
            pass
        try:
            for name in ("raw_activations", "activation_mean", "normalized", "edge_tiles", "components",
                         "component_cards"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        except Exception:
            page.screenshot(path=str(TEST_OUTPUT / "ui-lineage-failed.png"), full_page=True)
            raise
        page.wait_for_timeout(1500)
        shot = TEST_OUTPUT / "ui-lineage.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    # lineage as the UI's GraphQL API reports it: each asset's upstream
    data = _graphql(port, """query { assetNodes { assetKey { path } dependencyKeys { path } } }""")
    deps = {n["assetKey"]["path"][-1]: {d["path"][-1] for d in n["dependencyKeys"]} for n in data["assetNodes"]}
    assert deps["component_cards"] == {"components"}
    assert deps["components"] == {"edge_tiles"}
    assert deps["edge_tiles"] == {"normalized"}
    assert deps["normalized"] == {"raw_activations", "activation_mean"}
