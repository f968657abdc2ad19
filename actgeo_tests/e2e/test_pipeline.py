"""Every asset materialized in lineage, in-process, on a tiny random Gemma2 and a small text fixture.

The components are compared with an independent float64 brute force (dense similarity + scipy), the
cards with the labels, and the SQL rows with the cards.
"""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.outputs.report import format_summary
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.oracle import brute_force_labels
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("e2e")
    model_dir = tiny_gemma2(tmp / "model")
    # three shards (six tiles) and ranks up to 6: more partitions and cards than the tiny run's
    resource = ActgeoResource(data_dir=str(tmp / "data"),
                              **tiny_values(model=model_dir, n_shards=3, budget=1200, card_ranks=[2, 6]))
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
    assert len(sweep) == 56 and sweep["threshold"].min() == 0.4 and sweep["threshold"].max() == 0.95  # every 0.01
    assert set(sweep.loc[sweep["exact"], "threshold"].round(6)) == {0.4, 0.5, 0.6, 0.7, 0.8}
    for t in (0.5, 0.8, 0.63):  # listed thresholds exact; 0.63 too in practice (bound 3.8e-6 at d=64)
        ref = brute_force_labels(x, t)
        row = sweep[np.isclose(sweep["threshold"], t)].iloc[0]
        assert row["n_components"] == ref.max() + 1
        assert row["largest"] == np.bincount(ref)[0]
        assert row["second_largest"] == (np.bincount(ref)[1] if ref.max() >= 1 else 0)
    # exact graph edge counts at every listed threshold (counted in the tile pass, never listed)
    x64 = x.astype(np.float64)
    sims = np.triu(x64 @ x64.T, 1)
    for row in sweep[sweep["exact"]].itertuples():
        assert row.graph_edges == int(np.count_nonzero(sims >= row.threshold)), row.threshold
    assert sweep.loc[~sweep["exact"], "graph_edges"].isna().all()
    # the N-scaling curve: components over the first k shards, exact
    scaling = pd.read_csv(layout.components_dir / "scaling.csv")
    offsets = np.cumsum([0] + [np.load(layout.normalized(s)).shape[0] for s in settings.shard_keys])
    assert scaling["n"].tolist() == offsets[1:].tolist()
    for row in scaling.itertuples():
        ref = np.bincount(brute_force_labels(x[: row.n], settings.threshold))
        assert (row.n_components, row.largest) == (len(ref), ref[0])
    summary = json.loads((layout.components_dir / "summary.json").read_text())
    assert summary["transition"]["t_c"] == float(sweep["threshold"][sweep["second_largest"].idxmax()])
    assert not summary["study"]["comparable"] and "layer" in " ".join(summary["study"]["differences"])


def test_cards_report_and_sql(run) -> None:
    from actgeo_assets.lib.outputs.sql import read_components

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
    for hook in ('id="study-verdict"', 'id="transition"', 'id="n-scaling"', 'id="fig-n-scaling"', 'id="sweep-fine"'):
        assert hook in html, hook
    assert "Not comparable with the study" in html and "hook_resid_post" in html
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
    from actgeo_assets.lib.outputs.sql import read_components

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
    from actgeo_assets.lib.outputs.sql import read_subcomponents

    db = read_subcomponents(resource.db_url(), settings.run_id())
    assert db["size"].tolist() == [c["size"] for c in subs] and set(db["threshold"]) == {0.8}


def test_cards_read_what_follows_and_the_token_baseline(run) -> None:
    """Next tokens from the token tables, the model's own predictions (against a plain forward pass), the
    token-identity baseline and the duplicate count, in cards.json, the report and the SQL rows; raw rows
    stored in float32 and documents with their Pile analogue."""
    import re

    import torch

    from actgeo_assets.lib.analysis.readout import hidden_token_ids, readout_sample
    from actgeo_assets.lib.capture.model import load_model
    from actgeo_assets.lib.outputs.sql import read_components, read_runs

    resource, _, _ = run
    settings, layout = resource.settings(), resource.layout()
    data = json.loads((layout.cards_dir / "cards.json").read_text())
    for s in settings.shard_keys:
        meta = json.loads(layout.raw_meta(s).read_text())
        assert meta["dtype"] == "float32" and np.load(layout.raw(s), mmap_mode="r").dtype == np.float32
        assert meta["capture"]["dedup"] is True and meta["stats"]["corpus_duplicates"] == data["corpus_duplicates"]
        assert "pile_analogue" in pd.read_parquet(layout.docs(s)).columns
    tables = [pd.read_parquet(layout.tokens(s)) for s in settings.shard_keys]
    every = pd.concat(tables, ignore_index=True)
    follows = {(d, p): t for d, p, t in zip(every.doc_id, every.position, every.token, strict=True)}
    tokens = every  # the fixture keeps every row (all finite)
    labels = np.load(layout.components_dir / "labels.npy")
    assert len(tokens) == len(labels)
    loaded = load_model(settings.model, layout.model_cache, device="cpu", threads=1)
    hidden = hidden_token_ids(loaded.tokenizer)
    for card in data["cards"]:
        members = np.flatnonzero(labels == card["label_id"])
        nxt = [follows.get((d, p + 1)) for d, p in zip(tokens.doc_id[members], tokens.position[members], strict=True)]
        known = [t for t in nxt if t is not None]
        assert card["n_next_unknown"] == len(nxt) - len(known)
        counts = sorted(((t, known.count(t)) for t in set(known)), key=lambda x: (-x[1], x[0]))[:8]
        assert [tuple(x) for x in card["next_tokens"]] == counts
        strings = tokens.token[members].tolist()
        assert card["n_distinct_tokens"] == len(set(strings))
        assert card["token_purity"] == pytest.approx(max(map(strings.count, strings)) / len(strings), abs=1e-6)
        # the model's own top prediction at each sampled member, by a plain unpadded forward pass
        sample = readout_sample(members)
        assert card["model_next_members"] == len(sample)
        top1: dict[str, int] = {}
        for r in sample:
            doc = tokens[tokens.doc_id == tokens.doc_id[r]].sort_values("position")
            ids = [loaded.tokenizer.bos_token_id] + doc.token_id.tolist()[: int(tokens.position[r])]
            with torch.no_grad():
                probs = torch.softmax(loaded.model(torch.tensor([ids])).logits[0, -1].double(), -1)
            probs[sorted(hidden)] = -1
            word = loaded.tokenizer.decode([int(probs.argmax())])
            top1[word] = top1.get(word, 0) + 1
        got = {t: n for t, _, n in card["model_next"] if n}
        assert got == {t: n for t, n in top1.items() if t in got} and sum(got.values()) <= len(sample)
        assert max(top1.values()) == max(n for _, _, n in card["model_next"])
        assert not any(re.fullmatch(r"<\w+>", t) for t, _, _ in card["model_next"])
    base = data["token_baseline"]
    sizes = np.bincount(labels)
    small = [c for c in range(1, len(sizes)) if sizes[c] > 1]
    one = [len(set(tokens.token[labels == c])) == 1 for c in small]
    assert base["n_small"] == len(small) and base["share_one_token"] == pytest.approx(np.mean(one))
    assert 0 <= base["ami"] <= 1 and 0 < base["v_measure"] <= 1
    html = (layout.cards_dir / "report.html").read_text()
    for hook in ('id="baseline"', 'id="mixed-h"', 'id="duplicates"', 'class="chips next-corpus"',
                 'class="chips next-model"'):
        assert hook in html, hook
    db = read_components(resource.db_url(), settings.run_id())
    first = db[db["rank"] == data["cards"][0]["rank"]].iloc[0]
    assert first["model_next"] == data["cards"][0]["model_next"]
    assert first["token_purity"] == pytest.approx(data["cards"][0]["token_purity"])
    runs = read_runs(resource.db_url())
    mine = runs[runs["run_id"] == settings.run_id()].iloc[0]
    assert mine["token_v_measure"] == pytest.approx(base["v_measure"]) and mine["corpus_duplicates"] == data["corpus_duplicates"]
