"""The cards stage's members table (cards/members.parquet): every activation with its component, document,
source, position and token, checked against labels.npy and the shards' token tables read independently."""

from __future__ import annotations

import numpy as np
import pandas as pd

from actgeo_assets.lib.stages.cards import MEMBER_COLUMNS
from actgeo_assets.lib.store.layout import load_json, sha256_file
from actgeo_tests.support.tiny_run import run_rows


def test_members_table_is_every_activation_with_its_component(tiny_runs) -> None:
    run = tiny_runs()
    members = pd.read_parquet(run.layout.members)
    _, labels, tokens = run_rows(run.settings, run.layout)
    assert tuple(members.columns) == MEMBER_COLUMNS
    assert len(members) == len(labels) == run.record["n"]
    np.testing.assert_array_equal(members["row"], np.arange(len(labels)))
    np.testing.assert_array_equal(members["component"], labels)
    for column in ("doc_id", "source", "position", "token_id", "token"):
        assert members[column].tolist() == tokens[column].tolist(), column
    shards = np.repeat(run.settings.shard_keys, [int(np.load(run.layout.kept(s)).sum()) for s in run.settings.shard_keys])
    assert members["shard"].tolist() == shards.tolist()
    # the sizes it gives are the summary's
    sizes = members["component"].value_counts().sort_values(ascending=False).tolist()
    assert sizes[:len(run.record["summary"]["top_sizes"])] == run.record["summary"]["top_sizes"]
    assert load_json(run.layout.cards)["members_sha256"] == sha256_file(run.layout.members)
    # early: position below the limit; input_key: equal exactly when the token ids from the window's start agree
    limit = run.settings.early_position_limit
    assert members["early"].tolist() == (tokens["position"] < limit).tolist()
    raw = pd.concat([pd.read_parquet(run.layout.tokens(s)) for s in run.settings.shard_keys], ignore_index=True)
    prefix = {}
    for doc, group in raw.sort_values(["doc_id", "position"]).groupby("doc_id", sort=False):
        ids = group["token_id"].tolist()
        for k, pos in enumerate(group["position"].tolist()):
            prefix[(doc, pos)] = tuple(ids[: k + 1])
    inputs = [prefix[(d, p)] for d, p in zip(tokens["doc_id"], tokens["position"], strict=True)]
    same_key = pd.Series(members["input_key"]).duplicated(keep=False).to_numpy()
    same_input = pd.Series(inputs).duplicated(keep=False).to_numpy()
    np.testing.assert_array_equal(same_key, same_input)
    assert members.groupby("input_key").ngroups == len(set(inputs))


def test_plain_l2_on_the_runs_own_activations(tiny_runs) -> None:
    """The study's plain L2 on the run's activations: components and mean cosine against a dense float64 Gram
    matrix of the raw rows (scipy), computed here from the shards' files."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    from actgeo_assets.lib.stages.cards import _plain_l2_on_run
    from actgeo_assets.lib.stages.graph import load_components

    run = tiny_runs()
    raw = np.concatenate([np.load(run.layout.raw(s))[np.load(run.layout.kept(s))] for s in run.settings.shard_keys])
    unit = raw.astype(np.float64) / np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
    gram = unit @ unit.T
    n_comp, labels = connected_components(csr_matrix(gram >= run.settings.threshold), directed=False)
    offsets = load_components(run.settings, run.layout).offsets
    got = _plain_l2_on_run(run.settings, run.layout, offsets, len(unit))
    assert got["n"] == len(unit) and got["n_components"] == n_comp
    assert abs(got["largest_fraction"] - np.bincount(labels).max() / len(unit)) < 1e-12
    off = gram[~np.eye(len(unit), dtype=bool)]
    assert abs(got["mean_cosine"] - off.mean()) < 1e-9
    assert "plain L2" in " ".join(q for q, _, _ in load_json(run.layout.cards)["study"]["rows"])


def test_a_largest_component_that_is_no_giant_is_named_in_the_notes(tiny_runs) -> None:
    """card_ranks (2, ...) leaves rank 1 out as the giant: when it holds under half the activations the
    report's notes say so, and not otherwise."""
    from actgeo_assets.lib.stages.cards import GIANT_FRACTION

    seen = set()
    for run in (tiny_runs(), tiny_runs(threshold=0.8, subcard_threshold=0.9)):
        fraction = load_json(run.layout.summary)["summary"]["largest_fraction"]
        notes = load_json(run.layout.cards).get("notes") or []
        report = run.layout.report.read_text()
        named = "not a giant" in report
        assert named == (fraction < GIANT_FRACTION), (fraction, notes)
        seen.add(named)
    assert seen == {True, False}  # the two runs cover both cases
