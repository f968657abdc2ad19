"""The lookup's Dagster and CLI side on the shared tiny run (``support/tiny_run.py``): the `neighbour_index`
asset's metadata, and `actgeo lookup --json` through the CLI's main function, every answer against a float64
brute force. The library side (``lookup_text``, the index) is tested in ``lib/`` without Dagster."""

from __future__ import annotations

import json
from collections.abc import Callable

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_tests.support.oracle import query_links as _expect
from actgeo_tests.support.tiny_run import QUERY_TEXT as TEXT
from actgeo_tests.support.tiny_run import FinishedRun, run_rows


@pytest.fixture(scope="module")
def run(tiny_runs: Callable[..., FinishedRun], tmp_path_factory: pytest.TempPathFactory):
    """(the resource of the shared tiny run, an ephemeral instance, a settings file of the run's values)."""
    built = tiny_runs()
    resource = ActgeoResource(profile=built.settings.profile, data_dir=str(built.data_dir), **built.overrides)
    config = tmp_path_factory.mktemp("lookup") / "settings.json"
    config.write_text(json.dumps(built.overrides))
    return resource, dg.DagsterInstance.ephemeral(), config


def _run_rows(resource: ActgeoResource) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All normalized rows (float64), labels.npy, and the kept token table, read independently."""
    return run_rows(resource.settings(), resource.layout())


def test_neighbour_index_asset_metadata(run) -> None:
    from actgeo_assets.definitions import pipeline_assets

    resource, instance, _ = run
    result = dg.materialize(pipeline_assets(), selection=["lookup"], instance=instance, resources={"actgeo": resource})
    assert result.success
    meta = result.asset_materializations_for_node("lookup")[0].metadata
    n = len(np.load(resource.layout().labels))
    assert meta["rows"].value == n and meta["dim"].value == 64 and meta["index_type"].text == "IndexFlatIP"
    assert meta["bytes"].value == resource.layout().lookup_index.stat().st_size > n * 64 * 4


def test_cli_which_json(run, capsys: pytest.CaptureFixture[str]) -> None:
    from actgeo_assets.cli import main

    resource, _, config = run
    layout = resource.layout()
    base = ["which", TEXT, "--data-dir", str(layout.root.parent), "--config", str(config)]
    assert main([*base, "--json", "--k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(line) for line in lines]
    x, labels, _ = _run_rows(resource)
    settings = resource.settings()
    assert len(objs) > 20
    for obj in objs:
        assert {"text", "position", "rank", "label_id", "verdict", "nearest"} <= set(obj)
        assert len(obj["nearest"]) == 2
    # the JSON's rows are the brute force's: recapture is deterministic, so compare with the library's queries
    from actgeo_assets.lib.stages.lookup import lookup_text

    queries = lookup_text(settings, layout, TEXT, k=0, gpu=False).queries
    for obj, q in zip(objs, queries, strict=True):
        comps, _, _ = _expect(x, labels, q, settings.threshold)
        assert obj["label_id"] == (int(comps[0]) if len(comps) else None)
        assert obj["rank"] == (int(comps[0]) + 1 if len(comps) else None)
    # the human form, and a missing index with --no-build-index: exit 2 naming how to build it
    assert main([*base, "--k", "1"]) == 0
    assert "joins rank" in capsys.readouterr().out
    layout.lookup_index.unlink()
    assert main([*base, "--no-build-index"]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and "lookup" in err
