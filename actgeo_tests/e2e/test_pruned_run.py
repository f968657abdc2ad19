"""A run with ``prune_at`` (the scale profile's pruning) end to end on the tiny model: each shard's forest at
prune_at in `normalized`, tiles started from those components, the merge of both. Every cut the pruned forest
claims (min_threshold .. prune_at), the N-scaling curve over shard prefixes and the labels equal a float64
brute force; cuts above prune_at are refused; the tiles compute fewer pairs than all of them."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.defs.pipeline import specs_for
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.config.spec import SettingsError
from actgeo_assets.lib.graph import SingleLinkageForest, component_summary
from actgeo_assets.lib.outputs.explorer_page import read_embedded
from actgeo_assets.lib.stages.plan import plan
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.oracle import brute_force_labels
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pruned")
    # the scale profile (pruned at the threshold, no sub-cards: None keeps the profile's) on the tiny run,
    # three shards so that tiles start from two shards' components
    resource = ActgeoResource(data_dir=str(tmp / "data"), **tiny_values(
        profile="scale", model=tiny_gemma2(tmp / "model"), n_shards=3, budget=1200, threshold=0.5,
        sweep=[0.4, 0.45, 0.5], prune_at=0.5, n_landmarks=50, subcard_threshold=None))
    record = materialize_run(resource, dg.DagsterInstance.ephemeral(), echo=lambda s: None)
    return resource, record


def test_pruned_run_is_exact_up_to_prune_at(pruned) -> None:
    resource, record = pruned
    settings, layout = resource.settings(), resource.layout()
    x = np.concatenate([np.load(layout.normalized(s)) for s in settings.shard_keys])
    assert record["run_key"]["prune_at"] == 0.5
    np.testing.assert_array_equal(np.load(layout.labels), brute_force_labels(x, 0.5))
    forest = SingleLinkageForest.load(layout.forest)
    assert forest.exact_up_to == 0.5
    for t in (0.4, 0.45):
        np.testing.assert_array_equal(forest.labels_at(t), brute_force_labels(x, t))
    with pytest.raises(ValueError, match="prune_at"):
        forest.labels_at(0.6)
    # the explorer reads the same transition as the summary (a peak at prune_at is a lower bound there too) and
    # never offers a level above prune_at
    summary = json.loads(layout.summary.read_text())
    page = read_embedded(layout.explorer.read_text())
    assert page["transition"] == summary["transition"] and page["exact_up_to"] == 0.5
    assert max(page["icicle"]["levels"]) <= 0.5
    sweep = pd.read_csv(layout.sweep)
    assert sweep["threshold"].max() == pytest.approx(0.5)  # the fine sweep stops at prune_at
    for t in (0.4, 0.45, 0.5):
        row = sweep[np.isclose(sweep["threshold"], t)].iloc[0]
        assert row["n_components"] == len(np.unique(brute_force_labels(x, t)))
    # the N-scaling curve over shard prefixes: exact although the tiles were pruned
    scaling = pd.read_csv(layout.scaling)
    for row in scaling.itertuples():
        expect = component_summary(brute_force_labels(x[: row.n], 0.5), top=1)
        assert (row.n_components, row.largest) == (expect["n_components"], expect["largest"]), row


def test_pruned_tiles_skip_pairs_and_record_it(pruned) -> None:
    resource, _ = pruned
    settings, layout = resource.settings(), resource.layout()
    metas = [json.loads(layout.tile_meta(p).read_text()) for p in settings.pair_keys]
    assert all(m["prune_at"] == 0.5 for m in metas)
    computed, total = sum(m["pairs_computed"] for m in metas), sum(m["pairs_total"] for m in metas)
    assert total == 1200 * 1199 // 2 and computed < total
    shard = json.loads(layout.normalized_meta(settings.shard_keys[0]).read_text())
    assert shard["prune_at"] == 0.5 and shard["shard_components"] >= 1
    assert layout.shard_forest(settings.shard_keys[0]).exists()


def test_switching_pruning_off_makes_normalized_and_tiles_stale(pruned) -> None:
    resource, _ = pruned
    settings = resource.settings()
    stages = specs_for(["edge_tiles"])
    todo = plan(settings.replace(prune_at=None), resource.layout(), stages)
    assert todo.stale["normalized"] == settings.shard_keys and todo.stale["edge_tiles"] == settings.pair_keys
    assert "prune_at" in todo.reason("normalized")
    assert plan(settings, resource.layout(), stages).first_stage() is None  # current for the settings it ran with


def test_prune_at_rules() -> None:
    base = ActgeoResource(profile="demo").settings()
    with pytest.raises(SettingsError, match="prune_at 0.6 is below threshold 0.7"):
        base.replace(prune_at=0.6)
    with pytest.raises(SettingsError, match=r"sweep values \[0.8, 0.9\] are above prune_at"):
        base.replace(prune_at=0.7, subcard_threshold=None)
    with pytest.raises(SettingsError, match="subcard_threshold 0.8 is above prune_at"):
        base.replace(prune_at=0.7, sweep=(0.5, 0.7))
    scale = ActgeoResource(profile="scale").settings()
    assert (scale.prune_at, scale.budget, scale.n_shards, len(scale.pair_keys)) == (0.7, 1_000_000, 20, 210)
    assert "prune_at" not in base.run_key()  # an unpruned run keeps the id it had before pruning existed


CLIPPED_JS = """() => {
    const svg = document.querySelector('svg#percolation').getBoundingClientRect();
    return [...document.querySelectorAll('svg#percolation text')].map(t => [t.textContent, t.getBoundingClientRect()])
        .filter(([, b]) => b.left < svg.left - 0.5 || b.right > svg.right + 0.5).map(([s]) => s);
}"""


@pytest.mark.browser
def test_pruned_explorer_labels_fit_the_percolation_figure(pruned) -> None:
    """The run's threshold is the pruned sweep's last point: its label and the transition's are drawn on the
    side with room, inside the figure (in Chromium)."""
    from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium

    require_chromium()
    resource, _ = pruned
    with chromium_context(viewport=(1300, 900), timeout_ms=30_000) as ctx:
        page = ctx.new_page()
        page.goto(resource.layout().explorer.as_uri(), wait_until="load")
        page.locator("svg#percolation text").first.wait_for()
        labels = page.locator("svg#percolation text").all_text_contents()
        assert any("run's threshold 0.5" in t for t in labels), labels
        TEST_OUTPUT.mkdir(exist_ok=True)
        page.locator("svg#percolation").screenshot(path=str(TEST_OUTPUT / "explorer-pruned-percolation.png"))
        assert page.evaluate(CLIPPED_JS) == []
