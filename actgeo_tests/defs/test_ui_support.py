"""What makes the Dagster UI and CLI usable: metadata the asset pages show inline (cards with their contexts,
formatted numbers, narrow tables), the report server, the local instance's limits and the cores a step
gets, the CLI's message for a partitioned asset, and a data directory that does not depend on the working
directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from actgeo_assets.defs.cores import available_cores, pool_limit, step_settings
from actgeo_assets.defs.metadata import (
    INLINE_MD_CHARS,
    card_md,
    fmt,
    run_md,
    served_url,
    sweep_table,
    table_md,
)
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.store.layout import project_root, resolve_data_dir
from actgeo_tests.support.paths import REPO

# --- numbers and tables


def test_numbers_are_formatted() -> None:
    assert fmt(0.9161333333333334) == 0.9161
    assert fmt(3.0) == 3 and isinstance(fmt(3.0), int)
    assert fmt(np.int64(7)) == 7 and type(fmt(np.int64(7))) is int
    assert fmt(np.float32(0.123456)) == 0.1235
    assert fmt(True) is True and fmt("x") == "x" and fmt(float("nan")) == "nan"
    assert "0.9161333" not in table_md(["a"], [(0.9161333333333334,)])
    md = table_md(["n_components", "model"], [(5, "/tmp/pytest-of-root/pytest-107/model/tiny-gemma2 (local)")])
    assert md.splitlines()[0] == "| comps | model |"  # a known long header, shortened
    assert "| 5 | \u2026t-107/model/tiny-gemma2 (local) |" in md  # a path keeps its end, words their text


def test_sweep_table_is_narrow_and_formatted() -> None:
    sweep = pd.DataFrame({"threshold": [0.5, 0.55, 0.6], "n_components": [3, 4, 9], "largest": [90, 80, 20],
                          "largest_fraction": [0.9161333333333334, 0.8, 0.2], "second_largest": [5, 9, 11],
                          "singletons": [1, 2, 7], "non_singleton": [1, 1, 2], "forest_edges": [97, 96, 91],
                          "exact": [True, False, True], "graph_edges": [500, 400, 300]})
    table = sweep_table(sweep)
    names = [c.name for c in table.schema.columns]
    assert names == ["t", "comps", "giant %", "2nd", "single"]
    assert all(c.description for c in table.schema.columns)
    rows = [r.data for r in table.records]
    assert [r["t"] for r in rows] == [0.5, 0.6]  # the exact rows only
    assert rows[0]["giant %"] == "91.6%"


def test_run_description_fits_its_cell() -> None:
    md = run_md("model=/a/very/long/path/to/some/model-folder layer=9 corpus=builtin:pile-like threshold=0.7")
    lines = md.splitlines()
    assert lines[0] == "- model: `\u2026th/to/some/model-folder`" and lines[1] == "- layer: `9`"
    assert all(len(line) < 40 for line in lines)


# --- a card in Markdown, inline on the asset page


def _card(contexts: int = 6, token: str = " hon", **kw):
    ctx = [SimpleNamespace(left="the Right " * 8 + f"my {i}*_[x]", token=token, right=". Friend the Member " * 6,
                           source="Hansard") for i in range(contexts)]
    base = dict(rank=2, size=33, n_documents=25, provisional_label="' hon' (guess)",
                top_tokens=[(" hon", 33), ("`", 1)], contexts=ctx)
    return SimpleNamespace(**{**base, **kw})


def test_card_markdown_is_short_bold_and_escaped() -> None:
    md = card_md(_card())
    assert len(md) < INLINE_MD_CHARS  # Dagster renders it in place, not behind "[Show Markdown]"
    assert md.startswith("**rank 2** \u00b7 33 activations \u00b7 25 documents")
    assert "top tokens: `' hon'` \u00d733" in md and "`'`'`" not in md
    items = [line for line in md.splitlines() if line.startswith("- ")]
    assert len(items) >= 3
    assert all(" **hon**. Friend" in line for line in items)  # the space stays outside the bold
    assert "\\*\\_\\[x\\]" in items[0] and items[0].endswith("*(Hansard)*")
    assert "1 document \u00b7" in card_md(_card(contexts=1, n_documents=1))
    assert "**\u2423**" in card_md(_card(token=" "))  # a whitespace token stays visible


# --- the report server


@pytest.fixture()
def report_server(tmp_path: Path):
    import functools
    import http.server

    from actgeo_assets.report_server import ReportHandler

    root = tmp_path / "data"
    (root / "demo" / "cards").mkdir(parents=True)
    (root / "demo" / "components").mkdir(parents=True)
    (root / "demo" / "cards" / "report.html").write_text("<html><body>report</body></html>")
    (root / "demo" / "raw").mkdir()
    (root / "demo" / "raw" / "shard-000.npy").write_bytes(b"\x93NUMPY")
    (root / "actgeo.sqlite").write_bytes(b"SQLite")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot([0, 1], [0, 1])
    fig.savefig(root / "demo" / "components" / "fig.png")
    plt.close(fig)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(ReportHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_report_server_serves_reports_and_figures_only(report_server) -> None:
    import io

    from PIL import Image

    base, root = report_server
    assert _get(f"{base}/demo/cards/report.html") == (200, b"<html><body>report</body></html>")
    status, png = _get(f"{base}/demo/components/fig.png?w=320&v=abc")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (320, 160)
    assert Image.open(io.BytesIO(_get(f"{base}/demo/components/fig.png")[1])).size == (800, 400)
    for path in ("/demo/raw/shard-000.npy", "/actgeo.sqlite", "/demo/", "/../../etc/passwd",
                 "/demo/components/missing.png?w=100"):
        assert _get(base + path)[0] == 404, path


def test_served_url(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ACTGEO_REPORT_URL", "http://127.0.0.1:4123/")
    report = tmp_path / "demo" / "cards" / "report.html"
    assert served_url(report, tmp_path) == "http://127.0.0.1:4123/demo/cards/report.html"
    assert served_url(report, tmp_path, "0123456789abcdef", width=320).endswith("report.html?v=0123456789ab&w=320")
    monkeypatch.delenv("ACTGEO_REPORT_URL")
    assert served_url(report, tmp_path).startswith("http://127.0.0.1:3001/")


# --- the local instance and the cores of a step


def test_makefile_instance_limits_the_heavy_steps(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.local.yaml", home / "dagster.yaml")
    assert "cp dagster.local.yaml $@" in (REPO / "Makefile").read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        # enforced at dequeue: a queued run never starts to busy-wait on the pool beside the running one
        assert config.pool_config.pool_granularity.value == "run"
        assert config.run_queue_config.should_block_op_concurrency_limited_runs
        assert config.run_queue_config.max_concurrent_runs == 2
        assert pool_limit(instance) == 1
        context = SimpleNamespace(instance=instance)
        assert step_settings(context, RunSettings()).torch_threads == available_cores()
        assert step_settings(context, RunSettings(torch_threads=3)).torch_threads == 3
        instance.event_log_storage.set_concurrency_slots("actgeo_gpu", 2)
        assert pool_limit(instance) == 2
        assert step_settings(context, RunSettings()).torch_threads == max(1, available_cores() // 2)


# --- the Dagster CLI and the working directory


def _dagster(args: list[str], cwd: Path, home: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home), "ACTGEO_CONFIG": str(config)}
    return subprocess.run([str(Path(sys.executable).parent / "dagster"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_partitioned_asset_without_partition_gets_a_message(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"n_shards": 3, "budget": 300, "data_dir": str(tmp_path / "data")}))
    out = _dagster(["asset", "materialize", "-m", "actgeo_assets.definitions", "--select", "raw_activations"],
                   tmp_path, home, config)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "CheckError" not in out.stderr
    assert "raw_activations is partitioned: one partition per dataset shard" in out.stderr
    assert "shard-000, shard-001, shard-002" in out.stderr
    assert ("dagster asset materialize -m actgeo_assets.definitions --select raw_activations --partition shard-000"
            in out.stderr)
    assert "actgeo run" in out.stderr
    out = _dagster(["asset", "materialize", "-m", "actgeo_assets.definitions", "--select", "edge_tiles",
                    "--partition", "shard-000__shard-001"], tmp_path, home, config)
    assert "Traceback" not in out.stderr
    assert "partition 'shard-000__shard-001' is not registered in this Dagster instance" in out.stderr


def test_data_dir_does_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ACTGEO_CONFIG", raising=False)
    assert project_root() == REPO
    monkeypatch.chdir(tmp_path)
    assert ActgeoResource().layout().root == REPO / "data" / "demo"
    assert resolve_data_dir("elsewhere") == REPO / "elsewhere"
    assert resolve_data_dir(tmp_path / "abs") == tmp_path / "abs"
    assert ActgeoResource().db_url() == f"sqlite:///{REPO / 'data' / 'actgeo.sqlite'}"


def test_missing_inputs_name_the_path(tmp_path: Path) -> None:
    from actgeo_assets.lib.stages.activations import compute_mean
    from actgeo_assets.lib.stages.graph import merge_components

    resource = ActgeoResource(data_dir=str(tmp_path))
    settings, layout = resource.settings(), resource.layout()
    with pytest.raises(ValueError) as exc:
        compute_mean(settings, layout)
    assert str(layout.raw_meta("shard-000")) in str(exc.value)
    with pytest.raises(ValueError) as exc:
        merge_components(settings, layout)
    assert str(tmp_path) in str(exc.value)


def test_shard_sensor_waits_while_actgeo_run_writes(tmp_path: Path) -> None:
    """`make demo` while `make ui` runs: the sensor (running by default) waits instead of launching runs
    that the data directory's lock would fail."""
    from actgeo_assets.definitions import defs
    from actgeo_assets.defs.automation import shard_sensor
    from actgeo_assets.lib.store.lock import data_dir_lock

    resource = ActgeoResource(data_dir=str(tmp_path))
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"actgeo": resource},
                                      sensor_name="shard_sensor", definitions=defs)
    with data_dir_lock(resource.layout().lock, command="actgeo run --profile demo"):
        result = shard_sensor(context)
    assert not result.run_requests
    assert "waiting: PID" in result.skip_reason.skip_message and "actgeo run --profile demo" in (
        result.skip_reason.skip_message)
    result = shard_sensor(context)  # released: the (empty) data directory is stale, captures are requested
    assert [r.job_name for r in result.run_requests] == ["capture_job"] * 4
