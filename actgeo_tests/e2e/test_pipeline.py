"""Every asset materialized in lineage, in-process, on a tiny random Gemma2 and a small text fixture.

The components are compared with an independent float64 brute force (dense similarity + scipy), the
cards with the labels, and the SQL rows with the cards.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.report import format_summary
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.oracle import brute_force_labels
from actgeo_tests.support.tiny_model import tiny_gemma2

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mini_corpus.jsonl"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("e2e")
    model_dir = tiny_gemma2(tmp / "model")
    resource = ActgeoResource(
        profile="demo", data_dir=str(tmp / "data"), model=model_dir, layer=2, corpus=str(FIXTURE),
        n_shards=3, budget=1200, context_len=48, batch_size=4, normalization="center_l2",
        threshold=0.6, min_threshold=0.4, sweep=[0.4, 0.5, 0.6, 0.7, 0.8], card_ranks=[2, 6],
        contexts_per_card=3,
    )
    instance = dg.DagsterInstance.ephemeral()
    record = materialize_run(resource, instance, echo=lambda s: None)
    return resource, instance, record


def test_every_asset_materialized(run) -> None:
    resource, instance, _ = run
    settings = resource.settings()
    for key in ("activation_mean", "components", "component_cards"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
    for key, parts in (("raw_activations", settings.shard_keys), ("normalized", settings.shard_keys),
                       ("edge_tiles", settings.pair_keys)):
        done = instance.get_materialized_partitions(dg.AssetKey(key))
        assert set(parts) <= done, (key, set(parts) - done)
    assert len(settings.pair_keys) == 6  # 3 shards -> pairs i <= j


def test_components_equal_float64_brute_force(run) -> None:
    resource, _, record = run
    settings, layout = resource.settings(), resource.layout()
    x = np.concatenate([np.load(layout.normalized(s)) for s in settings.shard_keys])
    assert x.shape[0] == record["n"] == 1200 - 0  # the fixture has more tokens than the budget
    labels = np.load(layout.components_dir / "labels.npy")
    np.testing.assert_array_equal(labels, brute_force_labels(x, settings.threshold))
    sizes = np.bincount(labels)
    s = record["summary"]
    assert s["n_components"] == len(sizes)
    assert s["largest"] == sizes[0]
    assert s["singletons"] == int((sizes == 1).sum())
    assert s["non_singleton"] == int((sizes[1:] >= 2).sum())
    assert s["top_sizes"] == sizes[:20].tolist()
    assert 1 < s["n_components"] < len(labels), "fixture should give a non-trivial partition"
    sweep = pd.read_csv(layout.components_dir / "sweep.csv")
    for t in (0.5, 0.8):
        ref = brute_force_labels(x, t)
        row = sweep[np.isclose(sweep["threshold"], t)].iloc[0]
        assert row["n_components"] == ref.max() + 1
        assert row["largest"] == np.bincount(ref)[0]


def test_cards_report_and_sql(run) -> None:
    from actgeo_assets.lib.sqlstore import read_components

    resource, instance, record = run
    settings, layout = resource.settings(), resource.layout()
    cards = json.loads((layout.cards_dir / "cards.json").read_text())["cards"]
    sizes = record["summary"]["top_sizes"]
    expected_ranks = list(range(2, min(6, record["summary"]["n_components"]) + 1))
    assert [c["rank"] for c in cards] == expected_ranks
    tokens = pd.concat([pd.read_parquet(layout.tokens(s)) for s in settings.shard_keys])
    for c in cards:
        assert c["size"] == sizes[c["rank"] - 1]
        assert 1 <= len(c["contexts"]) <= 3
        assert set(c["source_mix"]) <= set(tokens["source"])
        assert sum(c["source_mix"].values()) == c["size"]
    db = read_components(resource.db_url(), settings.run_id())
    assert sorted(db["rank"].tolist()) == expected_ranks
    html = (layout.cards_dir / "report.html").read_text()
    assert "<mark" in html and "data:image/png;base64" in html
    s = record["summary"]
    lines = format_summary(s, "run").splitlines()
    assert lines[1:6] == [
        f"  activations (N)                        {record['n']:>12,}",
        f"  components                             {s['n_components']:>12,}",
        f"  largest                                {s['largest']:>12,}  ({100 * s['largest'] / record['n']:.1f}% of N)",
        f"  non-singleton components besides it    {s['non_singleton']:>12,}",
        f"  singletons                             {s['singletons']:>12,}",
    ]
    assert lines[6] == "  top-20 sizes: " + ", ".join(f"{v:,}" for v in s["top_sizes"])
    # every declared asset check ran and passed
    from actgeo_assets.definitions import defs

    for check in defs.get_repository_def().asset_graph.asset_check_keys:
        history = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
        assert history, f"check {check.name} never ran"
        assert history[0].event.asset_check_evaluation.passed, f"check {check.name} failed"


def test_rerun_is_idempotent(run) -> None:
    from actgeo_assets.lib.sqlstore import read_components

    resource, instance, record = run
    again = materialize_run(resource, instance, echo=lambda s: None)
    assert again["summary"] == record["summary"]
    db = read_components(resource.db_url(), resource.settings().run_id())
    assert len(db) == len(set(db["rank"])), "rerun duplicated SQL rows"
    # current partitions were skipped: no new raw_activations runs beyond components/cards
    assert all(not k.startswith("raw_activations") for k in again["times"]), again["times"]


def test_giant_subcards_match_brute_force(run) -> None:
    resource, _, _ = run
    settings, layout = resource.settings(), resource.layout()
    assert settings.subcard_threshold == 0.8  # the demo profile's default
    data = json.loads((layout.cards_dir / "cards.json").read_text())
    subs = data["subcards"]
    assert subs, "the demo profile cards the giant's sub-components"
    x = np.concatenate([np.load(layout.normalized(s)) for s in settings.shard_keys])
    labels = np.load(layout.components_dir / "labels.npy")
    giant = np.flatnonzero(labels == 0)
    hi = brute_force_labels(x, 0.8)[giant]
    ref_sizes = sorted(np.bincount(hi)[np.unique(hi)].tolist(), reverse=True)
    assert [c["size"] for c in subs] == ref_sizes[: len(subs)]
    assert all(c["subcomponent_of"] == 1 for c in subs)
    assert 'data-rank' in (layout.cards_dir / "report.html").read_text()
